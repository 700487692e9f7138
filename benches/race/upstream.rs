//! The upstream servers the scenarios talk to, in this process: an echo server and
//! a bulk server, each a fixed pool of blocking threads that accept on one
//! listener. The threads are started before the clients, so no thread is spawned
//! per connection on the server side of any path. The same servers speak TLS in
//! the TLS scenarios (`tls.rs` wraps each accepted socket first).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, Type};

/// Server threads do little and keep their buffers small or on the heap.
const STACK: usize = 64 * 1024;
/// The longest any one server read or write may block: bounds every server loop.
pub const IO_TIMEOUT: Duration = Duration::from_secs(300);
/// Bulk transfers move this much per system call on both ends (iperf3's default).
pub const CHUNK: usize = 128 * 1024;

/// A byte stream the servers and clients use: a plain socket, or a TLS session
/// over one (`tls.rs`).
pub trait Stream: Read + Write {
    /// Ends our sending half, so the other end reads its end of stream.
    fn hang_up(&mut self);
}

impl Stream for TcpStream {
    fn hang_up(&mut self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// A pool of threads serving connections on one loopback listener; stopped and
/// joined when dropped.
pub struct Server {
    pub addr: SocketAddr,
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Server {
    /// Echoes whatever each connection sends until it hangs up; `threads`
    /// connections can be served at once.
    pub fn echo(threads: usize) -> io::Result<Server> {
        Server::start(threads, Arc::new(echo))
    }

    /// For each connection: reads `bytes`, then sends `bytes` back, then hangs up.
    /// A connection that hangs up before sending anything is ignored.
    pub fn bulk(bytes: u64) -> io::Result<Server> {
        Server::start(1, Arc::new(move |s| bulk(s, bytes)))
    }

    /// `threads` threads that each run `handler` on the connections they accept.
    pub fn start(threads: usize, handler: Arc<dyn Fn(TcpStream) + Send + Sync>) -> io::Result<Server> {
        let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        let listener: TcpListener = socket.into();
        let stop = Arc::new(AtomicBool::new(false));
        let mut server = Server {
            addr: listener.local_addr()?,
            listener,
            stop,
            threads: Vec::with_capacity(threads),
        };
        for _ in 0..threads {
            let listener = server.listener.try_clone()?;
            let stop = Arc::clone(&server.stop);
            let handler = Arc::clone(&handler);
            let thread = thread::Builder::new()
                .stack_size(STACK)
                .spawn(move || accept_loop(&listener, &stop, &*handler))?;
            server.threads.push(thread);
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Shutting a listener down wakes every thread blocked in accept (EINVAL).
        let _ = SockRef::from(&self.listener).shutdown(Shutdown::Read);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool, handler: &dyn Fn(TcpStream)) {
    // Bounded: a thread serves at most this many connections, and stops on the
    // flag; errors other than the shutdown's back off.
    for _ in 0..10_000_000 {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
                let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
                handler(stream);
            }
            Err(_) if stop.load(Ordering::SeqCst) => return,
            Err(_) => thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// Echoes what the client sends until it hangs up.
pub fn echo(mut stream: impl Stream) {
    let mut buf = [0u8; 4096];
    // Ends when the client hangs up, fails, or stays silent for IO_TIMEOUT.
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads `bytes`, sends `bytes` back, hangs up, and waits for the client's hang-up.
pub fn bulk(mut stream: impl Stream, bytes: u64) {
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    while got < bytes {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => got += n as u64,
        }
    }
    let chunk = pattern(CHUNK);
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(CHUNK as u64) as usize;
        if stream.write_all(&chunk[..n]).is_err() {
            return;
        }
        sent += n as u64;
    }
    stream.hang_up();
    // Wait for the client's hang-up, so closing does not reset the connection.
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

/// Bytes that are not all one value, so nothing along the way can shortcut them.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
