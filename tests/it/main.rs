//! netrecord's integration tests: the built binary over real loopback sockets.

mod check;
mod faults;
mod forwards;
mod install;
mod limits;
mod pcap;
mod proxy;
mod replay;
mod resets;
mod show;
mod tls;
mod util;
