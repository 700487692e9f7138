//! Tests of netrecord install.
