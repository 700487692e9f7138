//! Tests of netrecord show.
