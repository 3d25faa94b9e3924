//! Hosts on a network, on one Linux machine: each host a network namespace
//! with its own IPv6 address (one /64 per host, under the prefix the
//! seed's underlay uses, `fd00:1122:3344::/48`), all joined by a bridge in
//! this (the "outside") namespace, from where omdb reaches every host by its
//! address.  And the faults a network makes, put in and taken back with
//! nftables inside a host's namespace: the path between two hosts cut (one
//! direction or both), a share of one host's packets dropped, one port
//! filtered.  (This kernel has no `netem` qdisc; `numgen random` drops a
//! share.)
//!
//! Everything is made with `ip` and `nft` (Debian `iproute2`, `nftables`)
//! and needs root.  [`Network`] removes its namespaces (killing what still
//! runs in them), links and routes when dropped, also when a test panics;
//! a network left by a process that was killed is swept away by the next
//! [`Network::create`] (names carry the creating process's id).

use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Every network name starts with this (namespaces, bridge, veth links).
const PREFIX: &str = "dn";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{command}` failed: {output}")]
    Command { command: String, output: String },
    #[error("could not run `{command}` (is iproute2/nftables installed?)")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("network namespaces need root (CAP_NET_ADMIN and CAP_SYS_ADMIN)")]
    NotRoot,
    #[error("no host {0:?} in this network")]
    UnknownHost(String),
    #[error("entering the namespace of host {host}: {source}")]
    Enter {
        host: String,
        #[source]
        source: std::io::Error,
    },
}

/// One host: a namespace and its address.
#[derive(Clone, Debug)]
pub struct Host {
    /// The name it was created with (`dns-internal-0`).
    pub name: String,
    /// The namespace (`ip netns exec NETNS ...`).
    pub netns: String,
    pub address: Ipv6Addr,
}

/// A fault in force, to be healed with [`Network::heal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// What it does, for messages.
    pub what: String,
    /// (namespace, chain, rule handle) of each rule it added.
    rules: Vec<(String, &'static str, u64)>,
}

/// Which packets a cut stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the first host to the second only.
    OneWay,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Udp,
    Tcp,
}

/// The hosts, the bridge joining them, and the address of the outside.
pub struct Network {
    id: String,
    bridge: String,
    /// The /56 this network's hosts are in.
    prefix: Ipv6Addr,
    /// The outside's address on the bridge.
    pub outside: Ipv6Addr,
    hosts: Vec<Host>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Network {
    /// Creates one namespace per name in `hosts`, joined by a new bridge.
    /// `subnet` picks the network's /56 inside `fd00:1122:3344::/48` (0 to
    /// 255; networks alive at once need different ones): host `i` gets
    /// `fd00:1122:3344:SSxx::1/64` with `xx = i + 1`, the outside
    /// `fd00:1122:3344:SSff::1`.
    pub fn create(subnet: u8, hosts: &[&str]) -> Result<Network, Error> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::NotRoot);
        }
        sweep_stale();
        let id = format!("{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let bridge = format!("{PREFIX}b{id}");
        let base = 0xfd00_1122_3344_0000_u64 as u128;
        let prefix_bits = (base << 64) | ((subnet as u128) << 72);
        let prefix = Ipv6Addr::from(prefix_bits);
        let outside = Ipv6Addr::from(prefix_bits | (0xff_u128 << 64) | 1);
        let mut network = Network { id, bridge, prefix, outside, hosts: Vec::new() };
        // From here on, Drop removes what was made, also on an error.
        run("ip", &["link", "add", &network.bridge, "type", "bridge"])?;
        run("ip", &["link", "set", &network.bridge, "up"])?;
        run(
            "ip",
            &["-6", "addr", "add", &format!("{outside}/64"), "dev", &network.bridge, "nodad"],
        )?;
        run("ip", &["-6", "route", "add", &format!("{prefix}/56"), "dev", &network.bridge])?;
        for (i, name) in hosts.iter().enumerate() {
            let address = Ipv6Addr::from(prefix_bits | (((i as u128) + 1) << 64) | 1);
            let netns = format!("{PREFIX}-{}-{name}", network.id);
            let veth = format!("{PREFIX}v{}y{i}", network.id);
            run("ip", &["netns", "add", &netns])?;
            network.hosts.push(Host { name: name.to_string(), netns: netns.clone(), address });
            run(
                "ip",
                &["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns],
            )?;
            run("ip", &["link", "set", &veth, "master", &network.bridge, "up"])?;
            let inside = |args: &[&str]| {
                let mut full = vec!["-n", netns.as_str()];
                full.extend_from_slice(args);
                run("ip", &full)
            };
            inside(&["link", "set", "lo", "up"])?;
            inside(&["link", "set", "eth0", "up"])?;
            inside(&["-6", "addr", "add", &format!("{address}/64"), "dev", "eth0", "nodad"])?;
            // Every host of the network is on the same link.
            inside(&["-6", "route", "add", &format!("{prefix}/56"), "dev", "eth0"])?;
            // The chains faults go into, empty until a fault is added.
            nft(
                &netns,
                "add table inet faults; \
                 add chain inet faults input { type filter hook input priority 0; policy accept; }; \
                 add chain inet faults output { type filter hook output priority 0; policy accept; }",
            )?;
        }
        Ok(network)
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn host(&self, name: &str) -> Result<&Host, Error> {
        self.hosts.iter().find(|h| h.name == name).ok_or_else(|| Error::UnknownHost(name.into()))
    }

    /// The bridge joining the hosts (in the outside namespace).
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The /56 every host's address is in.
    pub fn prefix(&self) -> Ipv6Addr {
        self.prefix
    }

    /// `program` to be run inside `host`'s namespace (through `ip netns
    /// exec`; as root, so a caller that wants another user adds a
    /// `setpriv` itself).
    pub fn command(&self, host: &Host, program: impl Into<PathBuf>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &host.netns]).arg(program.into());
        command
    }

    /// Runs `f` on a thread inside `host`'s namespace: sockets it creates
    /// belong to that host (and stay there when used from other threads).
    pub fn within<T: Send + 'static>(
        &self,
        host: &Host,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let path = PathBuf::from("/run/netns").join(&host.netns);
        let name = host.name.clone();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path)?;
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the thread panicked")))
        .map_err(|source| Error::Enter { host: name, source })
    }

    /// Stops packets from `from` to `to` (and back, with
    /// [`Direction::Both`]): each host drops what it would send to the other.
    pub fn cut(&self, from: &Host, to: &Host, direction: Direction) -> Result<Fault, Error> {
        let mut rules =
            vec![add_rule(&from.netns, "output", &format!("ip6 daddr {} drop", to.address))?];
        if direction == Direction::Both {
            rules.push(add_rule(&to.netns, "output", &format!("ip6 daddr {} drop", from.address))?);
        }
        let arrow = if direction == Direction::Both { "<->" } else { "->" };
        Ok(Fault { what: format!("path {} {arrow} {} cut", from.name, to.name), rules })
    }

    /// Drops `percent` of the packets `host` sends and of those it
    /// receives, at random.
    pub fn drop_share(&self, host: &Host, percent: u8) -> Result<Fault, Error> {
        let rule = match percent {
            0 => None,
            100.. => Some("drop".to_string()),
            p => Some(format!("numgen random mod 100 < {p} drop")),
        };
        let mut rules = Vec::new();
        if let Some(rule) = rule {
            rules.push(add_rule(&host.netns, "input", &rule)?);
            rules.push(add_rule(&host.netns, "output", &rule)?);
        }
        let percent = percent.min(100);
        Ok(Fault { what: format!("{percent}% of {}'s packets dropped", host.name), rules })
    }

    /// Drops everything that arrives at `host` for `port`.
    pub fn filter_port(&self, host: &Host, protocol: Protocol, port: u16) -> Result<Fault, Error> {
        let proto = match protocol {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
        };
        let rules = vec![add_rule(&host.netns, "input", &format!("{proto} dport {port} drop"))?];
        Ok(Fault { what: format!("{proto} port {port} of {} filtered", host.name), rules })
    }

    /// Takes `fault` back.
    pub fn heal(&self, fault: &Fault) -> Result<(), Error> {
        for (netns, chain, handle) in &fault.rules {
            nft(netns, &format!("delete rule inet faults {chain} handle {handle}"))?;
        }
        Ok(())
    }

    fn remove(&mut self) {
        for host in self.hosts.drain(..) {
            remove_netns(&host.netns);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Kills what runs in `netns` and deletes it (its veth goes with it).
fn remove_netns(netns: &str) {
    if let Ok(output) = Command::new("ip").args(["netns", "pids", netns]).output() {
        for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let _ = run("ip", &["netns", "del", netns]);
}

/// Removes networks whose creating process is gone (killed before it could
/// clean up).
fn sweep_stale() {
    let alive = |id: &str| {
        id.split('x').next().and_then(|pid| pid.parse::<i32>().ok()).is_some_and(|pid| {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        })
    };
    if let Ok(output) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if let Some(rest) = name.strip_prefix(&format!("{PREFIX}-"))
                && let Some((id, _)) = rest.split_once('-')
                && !alive(id)
            {
                remove_netns(name);
            }
        }
    }
    if let Ok(output) = Command::new("ip").args(["-o", "link", "show", "type", "bridge"]).output() {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let name = line.split(':').nth(1).unwrap_or_default().trim();
            if let Some(id) = name.strip_prefix(&format!("{PREFIX}b"))
                && !alive(id)
            {
                let _ = run("ip", &["link", "del", name]);
            }
        }
    }
}

fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| Error::Spawn { command: command.clone(), source })?;
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stdout));
        return Err(Error::Command { command, output: text.trim().to_string() });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn nft(netns: &str, script: &str) -> Result<String, Error> {
    run("ip", &["netns", "exec", netns, "nft", script])
}

/// Adds `rule` to `chain` of the faults table in `netns`; returns where it
/// is, for [`Network::heal`].
fn add_rule(
    netns: &str,
    chain: &'static str,
    rule: &str,
) -> Result<(String, &'static str, u64), Error> {
    // `-e -a`: echo the rule back with its handle ("... # handle 4").
    let output = run(
        "ip",
        &[
            "netns",
            "exec",
            netns,
            "nft",
            "-e",
            "-a",
            &format!("add rule inet faults {chain} {rule}"),
        ],
    )?;
    let handle = output
        .rsplit_once("# handle ")
        .and_then(|(_, h)| h.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| Error::Command {
            command: format!("nft add rule inet faults {chain} {rule}"),
            output: format!("no rule handle in {output:?}"),
        })?;
    Ok((netns.to_string(), chain, handle))
}
