//! Two federated servers on one machine (../shared/notes/xmpp-servers.md, "Federation on one
//! machine"): `home` (localhost, PEP from stratus) and `remote` (another domain), each in a
//! private mount namespace whose /etc/resolv.conf names a DNS responder of this process on a
//! loopback address, with the A and SRV records (RFC 2782) that s2s needs. Nothing of the
//! machine's own name service is touched.

use std::collections::HashMap;
use std::fs::File;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Kind, Server, free_port};

/// The domain of the other server.
pub const REMOTE_DOMAIN: &str = "remote.test";

/// ejabberd reaches `localhost` on the default s2s port without asking DNS (the notes), so the
/// home side listens there; one rig at a time on this machine (a file lock).
const HOME_S2S_PORT: u16 = 5269;

/// A minimal authoritative DNS responder (RFC 1035 section 4): A records, SRV records, an empty
/// answer for other types of a known name, NXDOMAIN for unknown names.
pub struct Dns {
    pub addr: Ipv4Addr,
    stop: Arc<AtomicBool>,
}

#[derive(Default, Clone)]
pub struct Records {
    /// name -> IPv4 address.
    pub a: HashMap<String, Ipv4Addr>,
    /// `_service._proto.name` -> (target, port).
    pub srv: HashMap<String, (String, u16)>,
}

impl Dns {
    /// Listens on port 53 of a loopback address of its own (resolv.conf has no port).
    pub fn start(records: Records) -> Dns {
        let pid = std::process::id();
        let socket = (0..64u32)
            .find_map(|i| {
                let n = pid.wrapping_add(i * 7919);
                let addr = Ipv4Addr::new(127, 53, (n >> 8) as u8, (n as u8).max(2));
                UdpSocket::bind((addr, 53)).ok().map(|s| (addr, s))
            })
            .expect("no loopback address free for the test DNS responder on port 53");
        let (addr, socket) = socket;
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(answer) = answer(&buf[..n], &records) {
                    let _ = socket.send_to(&answer, peer);
                }
            }
        });
        Dns { addr, stop }
    }

    /// A resolv.conf naming this responder.
    pub fn resolv_conf(&self) -> String {
        format!("nameserver {}\noptions timeout:1 attempts:2\n", self.addr)
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

const TYPE_A: u16 = 1;
const TYPE_SRV: u16 = 33;

fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    loop {
        let len = *msg.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        if len & 0xC0 != 0 {
            return None; // no compression in questions
        }
        labels.push(String::from_utf8_lossy(msg.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    Some((labels.join("."), at))
}

fn write_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

/// The answer to one query, or None for what is not a query.
fn answer(q: &[u8], records: &Records) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    let (name, end) = read_name(q, 12)?;
    let qtype = u16::from_be_bytes([*q.get(end)?, *q.get(end + 1)?]);
    let question = &q[12..end + 4];
    let known = records.a.contains_key(&name) || records.srv.contains_key(&name);
    let mut answers: Vec<(u16, Vec<u8>)> = Vec::new();
    match qtype {
        TYPE_A => {
            if let Some(ip) = records.a.get(&name) {
                answers.push((TYPE_A, ip.octets().to_vec()));
            }
        }
        TYPE_SRV => {
            if let Some((target, port)) = records.srv.get(&name) {
                let mut rdata = vec![0, 0, 0, 5];
                rdata.extend_from_slice(&port.to_be_bytes());
                write_name(&mut rdata, target);
                answers.push((TYPE_SRV, rdata));
            }
        }
        _ => {}
    }
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&q[0..2]); // id
    // QR, the query's opcode and RD, AA; RA; NXDOMAIN for names we do not know.
    out.push(0x80 | (q[2] & 0x79) | 0x04);
    out.push(0x80 | if known { 0 } else { 3 });
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for (kind, rdata) in answers {
        out.extend_from_slice(&[0xC0, 12]); // the question's name
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes()); // IN
        out.extend_from_slice(&60u32.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    Some(out)
}

/// The two servers, federating; `home` serves localhost with PEP delegated to pubsub.localhost.
pub struct Federation {
    pub home: Server,
    pub remote: Server,
    _dns: Dns,
    _lock: File,
    _dir: tempfile::TempDir,
}

impl Federation {
    pub fn start(home: Kind, remote: Kind) -> Federation {
        let lock = lock_home_port();
        let remote_port = free_port();
        let mut records = Records::default();
        let lo = Ipv4Addr::LOCALHOST;
        for name in ["localhost", "pubsub.localhost", REMOTE_DOMAIN] {
            records.a.insert(name.into(), lo);
        }
        for name in ["localhost", "pubsub.localhost"] {
            records.srv.insert(
                format!("_xmpp-server._tcp.{name}"),
                ("localhost".into(), HOME_S2S_PORT),
            );
        }
        records.srv.insert(
            format!("_xmpp-server._tcp.{REMOTE_DOMAIN}"),
            (REMOTE_DOMAIN.into(), remote_port),
        );
        let dns = Dns::start(records);
        let dir = tempfile::tempdir().unwrap();
        let resolv: PathBuf = dir.path().join("resolv.conf");
        std::fs::write(&resolv, dns.resolv_conf()).unwrap();

        let mut h = Server::unstarted(home, true);
        h.s2s = Some(HOME_S2S_PORT);
        h.resolv = Some(resolv.clone());
        let mut r = Server::unstarted(remote, false);
        r.domain = REMOTE_DOMAIN.into();
        r.s2s = Some(remote_port);
        r.resolv = Some(resolv);
        h.start();
        r.start();
        Federation {
            home: h,
            remote: r,
            _dns: dns,
            _lock: lock,
            _dir: dir,
        }
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        self.remote.stop();
        self.home.stop();
    }
}

/// The home server's s2s port is fixed: one rig at a time across test processes.
fn lock_home_port() -> File {
    let path = std::env::temp_dir().join("stratus-test-federation.lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    // Blocks until the rig running in another test process is done.
    f.lock().unwrap();
    f
}

/// Checks the responder's answers (RFC 1035 4.1.1 header, RCODE 3 for NXDOMAIN).
pub fn self_test() {
    {
        let mut records = Records::default();
        records.a.insert("h.test".into(), Ipv4Addr::LOCALHOST);
        records
            .srv
            .insert("_xmpp-server._tcp.h.test".into(), ("h.test".into(), 5299));
        let query = |name: &str, qtype: u16| {
            let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
            write_name(&mut q, name);
            q.extend_from_slice(&qtype.to_be_bytes());
            q.extend_from_slice(&1u16.to_be_bytes());
            answer(&q, &records).unwrap()
        };
        let a = query("H.test", TYPE_A);
        assert_eq!((a[3] & 0x0F, a[7]), (0, 1));
        assert_eq!(&a[a.len() - 4..], &[127, 0, 0, 1]);
        let srv = query("_xmpp-server._tcp.h.test", TYPE_SRV);
        assert_eq!(srv[7], 1);
        let aaaa = query("h.test", 28);
        assert_eq!((aaaa[3] & 0x0F, aaaa[7]), (0, 0));
        let unknown = query("nowhere.test", TYPE_A);
        assert_eq!(unknown[3] & 0x0F, 3);
    }
}
