//! Tests of netrecord replay.
