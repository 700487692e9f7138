//! Tests of netrecord check.
