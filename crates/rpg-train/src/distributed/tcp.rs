//! The exchanges over TCP, for processes no MPI connected (torchrun's): rank
//! 0 listens, the others connect to it, and every exchange is a gather to
//! rank 0, a sum in rank order (so every run sums alike) and a scatter of
//! the result. Simple and enough for a machine or a few; MPI or NCCL serve
//! large clusters. A peer that dies or stays silent past the timeout is an
//! error naming its rank, never a hang.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::collective::{Collective, CollectiveError};

/// Rank 0's connections (one per other rank, in rank order), or another
/// rank's connection to rank 0.
enum Links {
    Root(Vec<TcpStream>),
    Leaf(TcpStream),
}

/// The run's processes, connected through rank 0.
pub struct Tcp {
    rank: usize,
    world: usize,
    links: Links,
}

impl std::fmt::Debug for Tcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tcp(rank {} of {})", self.rank, self.world)
    }
}

fn engine(what: &'static str, message: impl std::fmt::Display) -> CollectiveError {
    CollectiveError::Engine {
        engine: "TCP",
        what,
        message: message.to_string(),
    }
}

impl Tcp {
    /// Connects rank `rank` of `world`: rank 0 listens on `port` (every
    /// interface), the others connect to `host:port`, retrying until
    /// `timeout`; every later read or write waits at most `timeout`.
    pub fn connect(
        rank: usize,
        world: usize,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Self, CollectiveError> {
        let configure = |s: &TcpStream| -> std::io::Result<()> {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))
        };
        let links = if rank == 0 {
            let listener = TcpListener::bind(("0.0.0.0", port))
                .map_err(|e| engine("listening", format!("port {port}: {e}")))?;
            listener
                .set_nonblocking(true)
                .map_err(|e| engine("listening", e))?;
            let mut peers: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
            let deadline = Instant::now() + timeout;
            while peers.iter().any(Option::is_none) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream
                            .set_nonblocking(false)
                            .and_then(|()| configure(&stream))
                            .map_err(|e| engine("connecting", e))?;
                        let mut id = [0u8; 8];
                        stream
                            .read_exact(&mut id)
                            .map_err(|e| engine("connecting", e))?;
                        let peer = u64::from_le_bytes(id) as usize;
                        match peers.get_mut(peer.wrapping_sub(1)) {
                            Some(slot @ None) => *slot = Some(stream),
                            _ => {
                                return Err(engine(
                                    "connecting",
                                    format!(
                                        "a process says it is rank {peer} of {world}, twice or out of range"
                                    ),
                                ));
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            let missing: Vec<String> = peers
                                .iter()
                                .enumerate()
                                .filter(|(_, p)| p.is_none())
                                .map(|(i, _)| (i + 1).to_string())
                                .collect();
                            return Err(engine(
                                "connecting",
                                format!(
                                    "ranks {} did not connect to port {port} within {:.0}s",
                                    missing.join(", "),
                                    timeout.as_secs_f64()
                                ),
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(engine("connecting", e)),
                }
            }
            Links::Root(peers.into_iter().flatten().collect())
        } else {
            let deadline = Instant::now() + timeout;
            let mut stream = loop {
                match TcpStream::connect((host, port)) {
                    Ok(s) => break s,
                    Err(e) if Instant::now() > deadline => {
                        return Err(engine(
                            "connecting",
                            format!("rank 0 at {host}:{port}: {e}"),
                        ));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            };
            configure(&stream).map_err(|e| engine("connecting", e))?;
            stream
                .write_all(&(rank as u64).to_le_bytes())
                .map_err(|e| engine("connecting", e))?;
            Links::Leaf(stream)
        };
        Ok(Self { rank, world, links })
    }

    /// Gathers `bytes` to rank 0, which folds them in rank order with
    /// `combine` and sends the result back: every rank ends with it.
    fn all_reduce(
        &self,
        what: &'static str,
        bytes: &mut [u8],
        combine: impl Fn(&mut [u8], &[u8]),
    ) -> Result<(), CollectiveError> {
        match &self.links {
            Links::Root(peers) => {
                let mut theirs = vec![0u8; bytes.len()];
                for (i, mut peer) in peers.iter().enumerate() {
                    peer.read_exact(&mut theirs)
                        .map_err(|e| lost(what, i + 1, e))?;
                    combine(bytes, &theirs);
                }
                for (i, mut peer) in peers.iter().enumerate() {
                    peer.write_all(bytes).map_err(|e| lost(what, i + 1, e))?;
                }
            }
            Links::Leaf(root) => {
                let mut root = root;
                root.write_all(bytes).map_err(|e| lost(what, 0, e))?;
                root.read_exact(bytes).map_err(|e| lost(what, 0, e))?;
            }
        }
        Ok(())
    }
}

impl Tcp {
    /// The element-wise sum of `values` over the ranks, sent as
    /// little-endian bytes.
    fn sum<T, const N: usize>(
        &self,
        what: &'static str,
        values: &mut [T],
        to_bytes: fn(T) -> [u8; N],
        from_bytes: fn([u8; N]) -> T,
    ) -> Result<(), CollectiveError>
    where
        T: Copy + std::ops::Add<Output = T>,
    {
        let value = |b: &[u8]| from_bytes(b.try_into().expect("N bytes"));
        let mut bytes: Vec<u8> = values.iter().flat_map(|v| to_bytes(*v)).collect();
        self.all_reduce(what, &mut bytes, |acc, other| {
            for (a, b) in acc.chunks_exact_mut(N).zip(other.chunks_exact(N)) {
                a.copy_from_slice(&to_bytes(value(a) + value(b)));
            }
        })?;
        for (v, b) in values.iter_mut().zip(bytes.chunks_exact(N)) {
            *v = value(b);
        }
        Ok(())
    }
}

/// The error of an exchange whose peer went away or stayed silent.
fn lost(what: &'static str, peer: usize, e: std::io::Error) -> CollectiveError {
    engine(
        what,
        format!("rank {peer} is gone or silent ({e}); the run stops"),
    )
}

impl Collective for Tcp {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn sum_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError> {
        self.sum(
            "gradient exchange",
            values,
            f32::to_le_bytes,
            f32::from_le_bytes,
        )
    }

    fn sum_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError> {
        self.sum("sum", values, f64::to_le_bytes, f64::from_le_bytes)
    }

    fn broadcast(&self, bytes: &mut Vec<u8>) -> Result<(), CollectiveError> {
        match &self.links {
            Links::Root(peers) => {
                for (i, mut peer) in peers.iter().enumerate() {
                    peer.write_all(&(bytes.len() as u64).to_le_bytes())
                        .and_then(|()| peer.write_all(bytes))
                        .map_err(|e| lost("broadcast", i + 1, e))?;
                }
            }
            Links::Leaf(root) => {
                let mut root = root;
                let mut len = [0u8; 8];
                root.read_exact(&mut len)
                    .map_err(|e| lost("broadcast", 0, e))?;
                let len = u64::from_le_bytes(len) as usize;
                if len > 1 << 30 {
                    return Err(engine(
                        "broadcast",
                        format!("rank 0 sent a length of {len} bytes"),
                    ));
                }
                bytes.resize(len, 0);
                root.read_exact(bytes)
                    .map_err(|e| lost("broadcast", 0, e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three ranks in threads: sums in rank order, and a broadcast.
    #[test]
    fn three_ranks_sum_and_broadcast() {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let timeout = Duration::from_secs(20);
        let handles: Vec<_> = (0..3)
            .map(|rank| {
                std::thread::spawn(move || {
                    let comm = Tcp::connect(rank, 3, "127.0.0.1", port, timeout).unwrap();
                    let mut v = vec![rank as f32, 1.0];
                    comm.sum_f32(&mut v).unwrap();
                    let mut w = [0.5f64 * rank as f64];
                    comm.sum_f64(&mut w).unwrap();
                    let mut bytes = if rank == 0 {
                        b"hello".to_vec()
                    } else {
                        Vec::new()
                    };
                    comm.broadcast(&mut bytes).unwrap();
                    (v, w[0], bytes)
                })
            })
            .collect();
        for h in handles {
            let (v, w, bytes) = h.join().unwrap();
            assert_eq!(v, vec![3.0, 3.0]);
            assert_eq!(w, 1.5);
            assert_eq!(bytes, b"hello");
        }
    }

    /// A rank that goes away is an error naming it on rank 0, not a hang.
    #[test]
    fn a_vanished_rank_is_an_error_naming_it() {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let timeout = Duration::from_secs(20);
        let leaf = std::thread::spawn(move || {
            // Connects, then drops the connection without exchanging.
            drop(Tcp::connect(1, 2, "127.0.0.1", port, timeout).unwrap());
        });
        let root = Tcp::connect(0, 2, "127.0.0.1", port, timeout).unwrap();
        leaf.join().unwrap();
        let err = root.sum_f32(&mut [1.0]).unwrap_err().to_string();
        assert!(err.contains("rank 1 is gone"), "{err}");
    }
}
