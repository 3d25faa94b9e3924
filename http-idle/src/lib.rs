//! Closes the HTTP API's connections that have moved no data for a time
//! limit while no request on them is being handled: idle keep-alive
//! connections, and requests whose headers or body stopped arriving
//! half-way (slowloris).
//!
//! Dropshot builds its hyper server itself and exposes no connection
//! timeouts (hyper's header-read timeout of 30 s is all it gets; an idle or
//! half-sent body waits forever).  So a [`Reaper`] thread looks at this
//! process's own TCP sockets every few hundred milliseconds: for each one
//! connected to the API's address, the kernel's `TCP_INFO` says how long ago
//! data last went either way; past the limit, and with no handler running
//! for that peer ([`InFlight`]), the socket is shut down (not closed: the
//! file descriptor stays hyper's, which then sees the end of the stream and
//! drops the connection).  Linux only; elsewhere the reaper does nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Requests being handled, by peer address: their connections are busy,
/// however long the handler takes, and for [`AFTER_HANDLER`] after it
/// returns (its response is written after the handler is done).
#[derive(Clone, Debug, Default)]
pub struct InFlight(Arc<Mutex<HashMap<SocketAddr, Peer>>>);

/// How long a connection counts as busy after its handler returned.
pub const AFTER_HANDLER: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Peer {
    running: u32,
    last_done: Option<std::time::Instant>,
}

/// Held for the duration of one handler.
pub struct InFlightGuard {
    in_flight: InFlight,
    peer: SocketAddr,
}

impl InFlight {
    /// Marks a request from `peer` as being handled until the guard drops.
    pub fn enter(&self, peer: SocketAddr) -> InFlightGuard {
        self.lock().entry(peer).or_default().running += 1;
        InFlightGuard { in_flight: self.clone(), peer }
    }

    /// Whether a handler runs for `peer`, or returned moments ago.  Forgets
    /// peers idle past the grace period.
    fn busy(&self, peer: &SocketAddr) -> bool {
        let mut map = self.lock();
        map.retain(|_, p| {
            p.running > 0 || p.last_done.is_some_and(|t| t.elapsed() < AFTER_HANDLER)
        });
        map.contains_key(peer)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Peer>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Some(peer) = self.in_flight.lock().get_mut(&self.peer) {
            peer.running = peer.running.saturating_sub(1);
            peer.last_done = Some(std::time::Instant::now());
        }
    }
}

/// The watching thread; stops when dropped.
pub struct Reaper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reaper {
    /// Starts watching the connections accepted on `local` (the API's bound
    /// address), shutting down those idle for `limit`.
    pub fn start(
        local: SocketAddr,
        limit: Duration,
        in_flight: InFlight,
    ) -> std::io::Result<Reaper> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let every = (limit / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let thread = std::thread::Builder::new().name("http-idle".into()).spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                for connection in sys::connections_to(local) {
                    if connection.idle >= limit && !in_flight.busy(&connection.peer) {
                        tracing::info!(
                            peer = %connection.peer, idle_ms = connection.idle.as_millis() as u64,
                            "closing an idle or half-sent HTTP connection"
                        );
                        sys::shut_down(&connection);
                    }
                }
            }
        })?;
        Ok(Reaper { stop, thread: Some(thread) })
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One connection to the watched address.
struct Connection {
    fd: i32,
    peer: SocketAddr,
    /// Since data last went either way.
    idle: Duration,
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // getsockname, getsockopt(TCP_INFO), shutdown: each with its SAFETY note
mod sys {
    use super::Connection;
    use std::net::{IpAddr, SocketAddr};
    use std::time::Duration;

    /// This process's TCP connections whose local end is `local`.
    pub(super) fn connections_to(local: SocketAddr) -> Vec<Connection> {
        let Ok(fds) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
        fds.flatten()
            .filter_map(|entry| {
                let fd: i32 = entry.file_name().to_str()?.parse().ok()?;
                let target = std::fs::read_link(entry.path()).ok()?;
                if !target.to_str()?.starts_with("socket:") {
                    return None;
                }
                let (ours, peer) = (sockname(fd, false)?, sockname(fd, true)?);
                let same_ip = ours.ip() == local.ip() || local.ip().is_unspecified();
                if ours.port() != local.port() || !same_ip {
                    return None;
                }
                Some(Connection { fd, peer, idle: idle(fd)? })
            })
            .collect()
    }

    fn sockname(fd: i32, peer: bool) -> Option<SocketAddr> {
        // SAFETY: the buffer is a zeroed sockaddr_storage with its length.
        unsafe {
            let mut storage: libc::sockaddr_storage = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            let address = &mut storage as *mut _ as *mut libc::sockaddr;
            let rc = if peer {
                libc::getpeername(fd, address, &mut len)
            } else {
                libc::getsockname(fd, address, &mut len)
            };
            if rc != 0 {
                return None;
            }
            match i32::from(storage.ss_family) {
                libc::AF_INET => {
                    let v4 = &*(address as *const libc::sockaddr_in);
                    let ip = IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes());
                    Some(SocketAddr::new(ip, u16::from_be(v4.sin_port)))
                }
                libc::AF_INET6 => {
                    let v6 = &*(address as *const libc::sockaddr_in6);
                    Some(SocketAddr::new(
                        IpAddr::from(v6.sin6_addr.s6_addr),
                        u16::from_be(v6.sin6_port),
                    ))
                }
                _ => None,
            }
        }
    }

    /// Since data last went either way, from the kernel's `TCP_INFO`.
    fn idle(fd: i32) -> Option<Duration> {
        // SAFETY: the buffer is a zeroed tcp_info with its length.
        unsafe {
            let mut info: libc::tcp_info = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
            let rc = libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                &mut info as *mut _ as *mut libc::c_void,
                &mut len,
            );
            (rc == 0).then(|| {
                Duration::from_millis(u64::from(
                    info.tcpi_last_data_recv.min(info.tcpi_last_data_sent),
                ))
            })
        }
    }

    pub(super) fn shut_down(connection: &Connection) {
        // Only if the descriptor still is that connection: it may have been
        // closed and reused since it was looked at.
        if sockname(connection.fd, true) == Some(connection.peer) {
            // SAFETY: shutdown does not close or free the descriptor.
            unsafe {
                libc::shutdown(connection.fd, libc::SHUT_RDWR);
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use super::Connection;
    use std::net::SocketAddr;

    pub(super) fn connections_to(_local: SocketAddr) -> Vec<Connection> {
        Vec::new()
    }

    pub(super) fn shut_down(_connection: &Connection) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    /// Waits until the peer sees the end of the stream; returns how long.
    fn closed_after(mut stream: TcpStream) -> Duration {
        let started = Instant::now();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buffer = [0u8; 64];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    }

    #[test]
    fn idle_connections_are_shut_down_busy_ones_are_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let in_flight = InFlight::default();
        let _reaper = Reaper::start(local, Duration::from_millis(300), in_flight.clone()).unwrap();

        // Idle: nothing ever sent.
        let idle = TcpStream::connect(local).unwrap();
        let (_idle_server, _) = listener.accept().unwrap();
        // Busy: a handler runs for its peer.
        let busy = TcpStream::connect(local).unwrap();
        let (_busy_server, busy_peer) = listener.accept().unwrap();
        let guard = in_flight.enter(busy_peer);
        // Trickling: a byte every 100 ms keeps it alive.
        let mut trickle = TcpStream::connect(local).unwrap();
        let (_trickle_server, _) = listener.accept().unwrap();
        let trickler = std::thread::spawn(move || {
            for _ in 0..15 {
                trickle.write_all(b"x").unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
            trickle
        });

        let waited = closed_after(idle);
        assert!(waited < Duration::from_secs(3), "idle connection open for {waited:?}");
        let mut trickle = trickler.join().expect("a connection moving data was shut down");
        busy.set_nonblocking(true).unwrap();
        let mut buffer = [0u8; 1];
        let still_open = matches!((&busy).read(&mut buffer), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        assert!(still_open, "a connection with a request in flight was shut down");
        assert!(trickle.write_all(b"x").is_ok(), "a connection moving data was shut down");
        drop(guard);
        busy.set_nonblocking(false).unwrap();
        // Busy a little longer (its response is being written), then idle.
        let waited = closed_after(busy);
        assert!(waited >= AFTER_HANDLER - Duration::from_millis(100), "closed after {waited:?}");
        assert!(
            waited < AFTER_HANDLER + Duration::from_secs(3),
            "idle after its request, open for {waited:?}"
        );
    }
}
