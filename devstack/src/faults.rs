//! The network's faults as controls of a running stack on hosts of its own
//! (`--hosts netns`): cut the path between two components, drop a share of
//! one component's packets, filter one of its ports; list them; heal one
//! or all.  `devstack fault ...` and `devstack heal ...` send these over the
//! control socket; tests call [`Stack::fault`] directly.  Each fault gets a
//! number, by which it is healed.

use crate::stack::Stack;
use anyhow::{Context, bail};
use host_network::{Direction, Fault, Protocol};

/// A fault in force, with its number.
pub struct NumberedFault {
    pub number: u32,
    pub fault: Fault,
}

impl Stack {
    /// Carries out one fault request: `cut A B [one-way]`, `drop A PERCENT`,
    /// `filter A udp|tcp PORT`, `list`, `heal NUMBER|all`.  Returns what
    /// was done, as a line.
    pub fn fault(&mut self, words: &[&str]) -> anyhow::Result<String> {
        let network = self.network.as_ref().context(
            "this stack runs on loopback: faults between hosts need `devstack run --hosts netns`",
        )?;
        let host = |name: &str| {
            network.host(name).map_err(|_| {
                let names: Vec<&str> = network.hosts().iter().map(|h| h.name.as_str()).collect();
                anyhow::anyhow!("no component {name:?}; the stack has: {}", names.join(", "))
            })
        };
        let fault = match words {
            ["cut", a, b] => network.cut(host(a)?, host(b)?, Direction::Both)?,
            ["cut", a, b, "one-way"] => network.cut(host(a)?, host(b)?, Direction::OneWay)?,
            ["drop", a, percent] => {
                let percent: u8 = percent
                    .trim_end_matches('%')
                    .parse()
                    .ok()
                    .filter(|p| *p <= 100)
                    .with_context(|| format!("{percent:?} is not a share from 0 to 100"))?;
                network.drop_share(host(a)?, percent)?
            }
            ["filter", a, protocol, port] => {
                let protocol = match *protocol {
                    "udp" => Protocol::Udp,
                    "tcp" => Protocol::Tcp,
                    other => bail!("{other:?} is not a protocol: say udp or tcp"),
                };
                let port: u16 = port.parse().with_context(|| format!("{port:?} is not a port"))?;
                network.filter_port(host(a)?, protocol, port)?
            }
            ["list"] => {
                if self.faults.is_empty() {
                    return Ok("no fault in force".into());
                }
                let list: Vec<String> =
                    self.faults.iter().map(|f| format!("{}: {}", f.number, f.fault.what)).collect();
                return Ok(list.join("; "));
            }
            ["heal", "all"] => {
                let mut healed = Vec::new();
                for f in std::mem::take(&mut self.faults) {
                    network.heal(&f.fault)?;
                    healed.push(format!("{}: {}", f.number, f.fault.what));
                }
                return Ok(match healed.is_empty() {
                    true => "no fault in force".into(),
                    false => format!("healed {}", healed.join("; ")),
                });
            }
            ["heal", number] => {
                let number: u32 =
                    number.parse().with_context(|| format!("{number:?} is not a fault number"))?;
                let index =
                    self.faults.iter().position(|f| f.number == number).with_context(|| {
                        format!("no fault {number} in force (`devstack fault list`)")
                    })?;
                let f = self.faults.remove(index);
                network.heal(&f.fault)?;
                return Ok(format!("healed {}: {}", f.number, f.fault.what));
            }
            _ => bail!(
                "unknown fault request {:?}: say `cut A B [one-way]`, `drop A PERCENT`, \
                 `filter A udp|tcp PORT`, `list` or `heal NUMBER|all`",
                words.join(" ")
            ),
        };
        self.next_fault += 1;
        let number = self.next_fault;
        let said = format!("fault {number}: {}", fault.what);
        self.faults.push(NumberedFault { number, fault });
        Ok(said)
    }
}
