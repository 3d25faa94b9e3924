//! `DNSPERF_MODE=cpu`: CPU time per answered query, ours against Knot, and
//! the machine's floor.
//!
//! Queries per second on a shared 2-core machine mostly say who got the
//! cores; the CPU a server process spends per answered query (its user +
//! system time over the run, from `/proc/PID/stat`, divided by the
//! queries dnsperf saw answered) says how much work it does for each.  The
//! floor is a do-nothing responder (this bench binary again, started with
//! `DNSPERF_ECHO_PORT`): it sends each datagram back with the QR bit set,
//! up to 32 per `recvmmsg`/`sendmmsg` on one socket, and over TCP writes
//! each message back as it reads it.  It runs in two ways:
//!
//! - "waits": one loop per core, each blocking until 32 datagrams have
//!   come (a blocking `recvmmsg` without `MSG_WAITFORONE`).  Every call is
//!   a full batch, which only works because dnsperf keeps 100 queries in
//!   flight; no server may do this (a lone query would wait for 31
//!   others), so this is below any real server's floor.
//! - "at once": one loop that blocks until one datagram has come and then
//!   takes whatever else is queued (`MSG_WAITFORONE`), as our server's
//!   receiving loop does: the least a server that answers each query as
//!   it arrives can spend through the socket interface.  Its queries per
//!   second are also the most this load generator drives here (dnsperf
//!   has one core, the server the other): a server that does no work is
//!   the ceiling for the q/s ratio too.
//!
//! For each zone size and transport: three rounds, each running dnsperf
//! against ours, knotd with one worker, knotd with one per core and the
//! two responders, one after the other (so that drift in the machine hits all
//! alike); medians and the spread are printed, and ours is compared with
//! Knot's better configuration for each figure (the higher q/s, the lower
//! CPU per query).
//!
//! `DNSPERF_TRANSPORTS` (default `udp,tcp`) picks the transports;
//! `DNSPERF_BASELINE=/path/to/dns-server` runs an earlier build of ours in
//! the same rounds, printed as a second row ("baseline") against the same
//! Knot and responder figures: a before/after from one run.
//! `DNSPERF_ECHO_SPIN=N` makes both responders do N steps of busy work per
//! datagram and `DNSPERF_ECHO_PAD=N` send N bytes more per answer: what the
//! floor costs when a server does some work per query, or sends answers
//! larger than the queries.

use super::{
    Process, free_port, put_config, query_file, start_knot, start_ours, start_ours_from,
    wait_for_port,
};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use test_support::TokenDir;

/// What dnsperf's "-c 10 -q 100" run measured, and the server's CPU
/// time meanwhile.
struct Run {
    qps: f64,
    completed: u64,
    cpu: Duration,
}

impl Run {
    fn cpu_per_query_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.completed.max(1) as f64
    }
}

/// A process's user + system time so far (all its threads).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/stat: {e}"));
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

fn dnsperf_cpu(pid: u32, port: u16, queries: &Path, seconds: u64, mode: &str) -> Run {
    let before = cpu_time(pid);
    let output = Command::new("dnsperf")
        .args(["-s", "127.0.0.1", "-p", &port.to_string(), "-l", &seconds.to_string()])
        .args(["-c", "10", "-q", "100", "-T", "1", "-t", "2", "-m", mode, "-d"])
        .arg(queries)
        .output()
        .expect("running dnsperf (apt-get install -y dnsperf)");
    let cpu = cpu_time(pid) - before;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let field = |label: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("no {label:?} from dnsperf:\n{text}"))
    };
    Run {
        qps: field("Queries per second:").parse().unwrap(),
        completed: field("Queries completed:").parse().unwrap(),
        cpu,
    }
}

/// How the do-nothing responder takes datagrams (see the module comment).
#[derive(Clone, Copy, PartialEq)]
pub enum Batching {
    /// Blocks until 32 have come, in one loop per core.
    Waits,
    /// Blocks for one, takes what else is queued, in one loop.
    AtOnce,
}

impl Batching {
    fn env_value(self) -> &'static str {
        match self {
            Batching::Waits => "waits",
            Batching::AtOnce => "at-once",
        }
    }

    /// From `DNSPERF_ECHO_BATCHING` (the child's side).
    pub fn from_env() -> Batching {
        match std::env::var("DNSPERF_ECHO_BATCHING").as_deref() {
            Ok("at-once") => Batching::AtOnce,
            _ => Batching::Waits,
        }
    }
}

/// This bench binary as the do-nothing responder on a free port.
fn start_responder(batching: Batching) -> (Process, u16) {
    let port = free_port();
    let child = Command::new(std::env::current_exe().unwrap())
        .env("DNSPERF_ECHO_PORT", port.to_string())
        .env("DNSPERF_ECHO_BATCHING", batching.env_value())
        .spawn()
        .expect("starting the do-nothing responder");
    let process = Process(child);
    wait_for_port(port);
    (process, port)
}

/// The do-nothing responder (in the child process): UDP datagrams and TCP
/// messages sent back with the QR bit set; runs until killed.
pub fn respond(port: u16, batching: Batching) -> ! {
    let udp = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let tcp = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let loops = match batching {
        Batching::Waits => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        Batching::AtOnce => 1,
    };
    let flags = match batching {
        Batching::Waits => 0,
        Batching::AtOnce => libc::MSG_WAITFORONE,
    };
    for _ in 0..loops {
        let socket = udp.try_clone().unwrap();
        std::thread::spawn(move || echo_datagrams(&socket, flags));
    }
    for stream in tcp.incoming().flatten() {
        std::thread::spawn(move || echo_stream(stream));
    }
    unreachable!("the listener never ends")
}

/// Up to 32 datagrams per call each way, as our server's loops do;
/// `flags` for `recvmmsg` decide how long a call waits.
#[allow(unsafe_code)]
fn echo_datagrams(socket: &std::net::UdpSocket, flags: libc::c_int) {
    use std::os::fd::AsRawFd;
    const BATCH: usize = 32;
    let fd = socket.as_raw_fd();
    let mut buffers = vec![[0u8; 512]; BATCH];
    // SAFETY: plain C structs, all-zero is a valid value for each.
    let mut addresses: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovecs: Vec<libc::iovec> = buffers
        .iter_mut()
        .map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() })
        .collect();
    // SAFETY: as above.
    let mut messages: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    // Knobs for asking what the floor depends on (docs/PERFORMANCE.md):
    // `DNSPERF_ECHO_SPIN` steps of busy work per datagram (a server's own
    // work per query, without its data), `DNSPERF_ECHO_PAD` bytes more per
    // answer (answers are larger than queries).
    let knob = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<usize>().ok());
    let (spin, pad) =
        (knob("DNSPERF_ECHO_SPIN").unwrap_or(0), knob("DNSPERF_ECHO_PAD").unwrap_or(0));
    let mut work = 0u64;
    loop {
        for i in 0..BATCH {
            iovecs[i].iov_len = 512;
            let header = &mut messages[i].msg_hdr;
            header.msg_name = (&mut addresses[i] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            header.msg_iov = &mut iovecs[i];
            header.msg_iovlen = 1;
        }
        // SAFETY: every header points at live buffers of the stated sizes.
        let got = unsafe {
            libc::recvmmsg(fd, messages.as_mut_ptr(), BATCH as u32, flags, std::ptr::null_mut())
        };
        if got <= 0 {
            continue;
        }
        let got = got as usize;
        for i in 0..got {
            let len = messages[i].msg_len as usize;
            if len > 2 {
                buffers[i][2] |= 0x80;
            }
            iovecs[i].iov_len = (len + pad).min(buffers[i].len());
            for step in 0..spin {
                work = std::hint::black_box(work.wrapping_mul(31).wrapping_add(step as u64));
            }
        }
        // SAFETY: as above; lengths are what was received.
        unsafe { libc::sendmmsg(fd, messages.as_mut_ptr(), got as u32, 0) };
    }
}

fn echo_stream(mut stream: std::net::TcpStream) {
    let mut message = vec![0u8; 65_535];
    loop {
        let mut length = [0u8; 2];
        if stream.read_exact(&mut length).is_err() {
            return;
        }
        let n = u16::from_be_bytes(length) as usize;
        if stream.read_exact(&mut message[..n]).is_err() {
            return;
        }
        if n > 2 {
            message[2] |= 0x80;
        }
        let mut out = Vec::with_capacity(n + 2);
        out.extend_from_slice(&length);
        out.extend_from_slice(&message[..n]);
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// "median (min-max)".
fn spread(values: &[f64], digits: usize) -> String {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.digits$} ({lo:.digits$}-{hi:.digits$})", median(values.to_vec()))
}

pub async fn cpu_per_query(tokens: &TokenDir, http: &reqwest::Client, seconds: u64) {
    let sizes: Vec<usize> = std::env::var("DNSPERF_SIZES")
        .ok()
        .map(|s| s.split(',').map(|n| n.trim().parse().expect("DNSPERF_SIZES: numbers")).collect())
        .unwrap_or(vec![1_000, 100_000]);
    let transports: Vec<String> = std::env::var("DNSPERF_TRANSPORTS")
        .unwrap_or("udp,tcp".into())
        .split(',')
        .map(|t| t.trim().to_string())
        .collect();
    let baseline_binary = std::env::var("DNSPERF_BASELINE").ok();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "| names | via | ours q/s | Knot q/s (1 worker / {cores}) | ours CPU µs/q | Knot CPU µs/q (1 worker / {cores}) | responder CPU µs/q (waits / at once) | q/s ours / Knot's best | CPU ours / Knot's best | CPU ours / responder (waits / at once) | responder at once / Knot's best: q/s, CPU |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for names in sizes {
        let dir = tempfile::tempdir().unwrap();
        let queries = dir.path().join("queries.txt");
        std::fs::write(&queries, query_file(names)).unwrap();
        let (ours, dns, api) = start_ours(dir.path(), &tokens.token_file()).await;
        put_config(http, api, names).await;
        let ours_pid = ours.pid().unwrap().as_raw() as u32;
        let (knot1, knot1_port) = start_knot(dir.path(), names, Some(1));
        let (knot_n, knot_n_port) = start_knot(dir.path(), names, Some(cores));
        let (responder, responder_port) = start_responder(Batching::Waits);
        let (at_once, at_once_port) = start_responder(Batching::AtOnce);
        let mut targets = vec![
            (ours_pid, dns.port()),
            (knot1.0.id(), knot1_port),
            (knot_n.0.id(), knot_n_port),
            (responder.0.id(), responder_port),
            (at_once.0.id(), at_once_port),
        ];
        let mut baseline = None;
        if let Some(binary) = &baseline_binary {
            let token_file = tokens.token_file();
            let (process, dns, api) =
                start_ours_from(Path::new(binary), "baseline", dir.path(), &token_file).await;
            put_config(http, api, names).await;
            targets.push((process.pid().unwrap().as_raw() as u32, dns.port()));
            baseline = Some(process);
        }
        for mode in &transports {
            let mode = mode.as_str();
            let mut runs: Vec<Vec<Run>> = (0..targets.len()).map(|_| Vec::new()).collect();
            for _round in 0..3 {
                for (i, (pid, port)) in targets.iter().enumerate() {
                    let queries = queries.clone();
                    let (pid, port, mode) = (*pid, *port, mode.to_string());
                    let run = tokio::task::spawn_blocking(move || {
                        dnsperf_cpu(pid, port, &queries, seconds, &mode)
                    })
                    .await
                    .unwrap();
                    runs[i].push(run);
                }
            }
            let qps: Vec<Vec<f64>> =
                runs.iter().map(|r| r.iter().map(|r| r.qps).collect()).collect();
            let cpu: Vec<Vec<f64>> =
                runs.iter().map(|r| r.iter().map(Run::cpu_per_query_us).collect()).collect();
            let m = |v: &Vec<f64>| median(v.clone());
            let best_qps = m(&qps[1]).max(m(&qps[2]));
            let best_cpu = m(&cpu[1]).min(m(&cpu[2]));
            // Ours, then the baseline (if any) against the same peers.
            for (row, label) in [(0, ""), (5, " (baseline)")] {
                if row >= runs.len() {
                    continue;
                }
                println!(
                    "| {names} | {}{label} | {} | {} / {} | {} | {} / {} | {} / {} | {:.2} | {:.2} | {:.2} / {:.2} | {:.2}, {:.2} |",
                    mode.to_uppercase(),
                    spread(&qps[row], 0),
                    spread(&qps[1], 0),
                    spread(&qps[2], 0),
                    spread(&cpu[row], 2),
                    spread(&cpu[1], 2),
                    spread(&cpu[2], 2),
                    spread(&cpu[3], 2),
                    spread(&cpu[4], 2),
                    m(&qps[row]) / best_qps,
                    m(&cpu[row]) / best_cpu,
                    m(&cpu[row]) / m(&cpu[3]),
                    m(&cpu[row]) / m(&cpu[4]),
                    m(&qps[4]) / best_qps,
                    m(&cpu[4]) / best_cpu,
                );
            }
            let _ = std::io::stdout().flush();
        }
        drop(baseline);
        drop((ours, knot1, knot_n, responder, at_once));
    }
}
