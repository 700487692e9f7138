//! Tests of netrecord pcap.
