//! Tests of the recording proxy itself.

use std::net::Shutdown;

use crate::util::*;

#[test]
fn scripted_exchange_is_forwarded_and_recorded() {
    let upstream = Upstream::echo();
    let proxy = Proxy::start(upstream.addr, &[]);
    let client = connect(proxy.addr);
    send(&client, b"PING\r\n");
    assert_eq!(read_n(&client, 6), b"PING\r\n");
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&client), b"");
    proxy.wait_ended(1);
    let log = valid_log(&proxy.log(1));
    assert_eq!(log.shape(), "c con, c 6, s 6, c hup, s hup");
    assert_eq!(log.client, b"PING\r\n");
    assert_eq!(log.server, b"PING\r\n");
}
