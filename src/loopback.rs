//! Free loopback ports for the clusters that tests, the chaos harness and the bench start.
//!
//! The usual trick, binding port 0 and closing the socket, leaves a window before the
//! replica binds the port, and the kernel hands out port-0 binds and the local ports of
//! outgoing connections from the same ephemeral range: on a machine that has just made a
//! million connections (a chaos run) an outgoing connection can take the port first, and
//! the replica stops with "Address already in use". Ports between 10,000 and the start of
//! the ephemeral range are only ever taken by an explicit bind, which closes that window
//! to everything but another process picking ports the same way at the same moment.
//! Within one process (the tests of one binary run in parallel threads) a port is never
//! handed out twice, so two clusters starting at once cannot pick the same free port
//! before either binds it.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// Ports this process has handed out.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Below this, well-known services (etcd 2379, Postgres 5432, `local-cluster` 7001, ...).
const LOWEST: u16 = 10_000;

/// A loopback port that was free just now, outside the ephemeral range where possible.
pub fn free_port() -> std::io::Result<u16> {
    free_ports(1)
}

/// The first of `count` consecutive loopback ports that were all free just now (for
/// `local-cluster`, whose replica N listens on base + N - 1), outside the ephemeral
/// range where possible; all of them count as handed out.
pub fn free_ports(count: u16) -> std::io::Result<u16> {
    let count = count.max(1);
    if let Some(low) = ephemeral_low() {
        if low > LOWEST + 1_000 + count {
            let span = u32::from(low - LOWEST - count + 1);
            let start = scatter() % span;
            let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
            if handed_out.len() as u32 >= span / 2 {
                // A long-lived process (a chaos run) that has used half the range: the
                // oldest of those are long bound or gone; start remembering afresh.
                handed_out.clear();
            }
            for step in 0..span {
                let base = LOWEST + ((start + step) % span) as u16;
                let ports = base..base + count;
                let free = ports.clone().all(|port| {
                    !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok()
                });
                if free {
                    handed_out.extend(ports);
                    return Ok(base);
                }
            }
        }
    }
    if count == 1 {
        return Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrNotAvailable,
        format!("no {count} consecutive free loopback ports"),
    ))
}

/// The first port of the kernel's ephemeral range (Linux), if it can be read.
fn ephemeral_low() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// Where to start looking: differs between processes and calls, so concurrent test
/// processes rarely probe the same ports in the same order.
fn scatter() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_and_outside_the_ephemeral_range() {
        let port = free_port().unwrap();
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
        if let Some(low) = ephemeral_low().filter(|low| *low > LOWEST + 1_000) {
            assert!(
                (LOWEST..low).contains(&port),
                "{port} not in {LOWEST}..{low}"
            );
            // Taken ports are skipped.
            let next = free_port().unwrap();
            assert_ne!(next, port);
        }
        drop(listener);
    }

    #[test]
    fn a_run_of_ports_is_free_and_never_overlaps_another() {
        if ephemeral_low()
            .filter(|low| *low > LOWEST + 1_000)
            .is_none()
        {
            return;
        }
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let base = free_ports(3).unwrap();
            for port in base..base + 3 {
                TcpListener::bind(("127.0.0.1", port)).expect("every port of the run is free");
                assert!(seen.insert(port), "{port} handed out twice");
            }
            let single = free_port().unwrap();
            assert!(seen.insert(single), "{single} handed out twice");
        }
    }

    #[test]
    fn a_port_is_not_handed_out_twice_in_one_process() {
        if ephemeral_low()
            .filter(|low| *low > LOWEST + 1_000)
            .is_none()
        {
            return;
        }
        // Nothing binds these ports, so only the memory of ports handed out keeps the
        // same one from coming back.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2_000 {
            let port = free_port().unwrap();
            assert!(seen.insert(port), "{port} handed out twice");
        }
    }
}
