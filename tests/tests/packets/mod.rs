//! Hand-built Ethernet frames for BPF_PROG_TEST_RUN. Checksums are left zero: the
//! classifiers never read them.

use std::net::IpAddr;

/// Layer 4 of a test frame.
#[derive(Clone, Debug)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP or ICMPv6 (chosen by the IP version): type, code, identifier.
    Icmp {
        ty: u8,
        code: u8,
        id: u16,
    },
    /// Any other protocol with a few bytes of payload.
    Raw {
        proto: u8,
    },
}

impl L4 {
    pub fn tcp(sport: u16, dport: u16) -> L4 {
        L4::Tcp { sport, dport }
    }
    pub fn udp(sport: u16, dport: u16) -> L4 {
        L4::Udp { sport, dport }
    }
    pub fn echo_request(id: u16) -> L4 {
        L4::Icmp { ty: 8, code: 0, id }
    }
    pub fn echo_reply(id: u16) -> L4 {
        L4::Icmp { ty: 0, code: 0, id }
    }
}

/// A frame under construction.
#[derive(Clone, Debug)]
pub struct Frame {
    src: IpAddr,
    dst: IpAddr,
    l4: L4,
    mac_src: [u8; 6],
    vlan: Option<u16>,
    ethertype: Option<u16>,
    /// IPv4 flags+fragment offset field.
    frag: u16,
    /// IPv4 options bytes (multiple of 4).
    ipv4_options: usize,
    /// IPv6 extension headers (next-header numbers), each 8 bytes long.
    ipv6_ext: Vec<u8>,
    hop_limit: u8,
    truncate: Option<usize>,
    version_override: Option<u8>,
    ihl_override: Option<u8>,
}

impl Frame {
    fn new(src: &str, dst: &str, l4: L4) -> Frame {
        Frame {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            l4,
            mac_src: [2, 0, 0, 0, 0, 0x99],
            vlan: None,
            ethertype: None,
            frag: 0,
            ipv4_options: 0,
            ipv6_ext: Vec::new(),
            hop_limit: 64,
            truncate: None,
            version_override: None,
            ihl_override: None,
        }
    }
    pub fn v4(src: &str, dst: &str, l4: L4) -> Frame {
        let f = Frame::new(src, dst, l4);
        assert!(f.src.is_ipv4() && f.dst.is_ipv4());
        f
    }
    pub fn v6(src: &str, dst: &str, l4: L4) -> Frame {
        let mut f = Frame::new(src, dst, l4);
        assert!(f.src.is_ipv6() && f.dst.is_ipv6());
        if let L4::Icmp { ty, .. } = &mut f.l4 {
            // ICMPv6 numbering for echo.
            *ty = match *ty {
                8 => 128,
                0 => 129,
                other => other,
            };
        }
        f
    }
    pub fn mac_src(mut self, mac: [u8; 6]) -> Frame {
        self.mac_src = mac;
        self
    }
    pub fn vlan(mut self, id: u16) -> Frame {
        self.vlan = Some(id);
        self
    }
    pub fn ethertype(mut self, t: u16) -> Frame {
        self.ethertype = Some(t);
        self
    }
    pub fn frag(mut self, field: u16) -> Frame {
        self.frag = field;
        self
    }
    pub fn ipv4_options(mut self, bytes: usize) -> Frame {
        self.ipv4_options = bytes;
        self
    }
    pub fn ipv6_ext(mut self, next_headers: &[u8]) -> Frame {
        self.ipv6_ext = next_headers.to_vec();
        self
    }
    pub fn hop_limit(mut self, h: u8) -> Frame {
        self.hop_limit = h;
        self
    }
    pub fn truncate(mut self, len: usize) -> Frame {
        self.truncate = Some(len);
        self
    }
    pub fn version(mut self, v: u8) -> Frame {
        self.version_override = Some(v);
        self
    }
    pub fn ihl(mut self, ihl: u8) -> Frame {
        self.ihl_override = Some(ihl);
        self
    }

    fn l4_bytes(&self) -> (u8, Vec<u8>) {
        let v6 = self.src.is_ipv6();
        match self.l4 {
            L4::Tcp { sport, dport } => {
                let mut b = vec![0u8; 20];
                b[0..2].copy_from_slice(&sport.to_be_bytes());
                b[2..4].copy_from_slice(&dport.to_be_bytes());
                b[12] = 5 << 4;
                b[13] = 0x02; // SYN
                (6, b)
            }
            L4::Udp { sport, dport } => {
                let mut b = vec![0u8; 8 + 4];
                b[0..2].copy_from_slice(&sport.to_be_bytes());
                b[2..4].copy_from_slice(&dport.to_be_bytes());
                b[4..6].copy_from_slice(&12u16.to_be_bytes());
                (17, b)
            }
            L4::Icmp { ty, code, id } => {
                let mut b = vec![0u8; 8 + 8];
                b[0] = ty;
                b[1] = code;
                b[4..6].copy_from_slice(&id.to_be_bytes());
                (if v6 { 58 } else { 1 }, b)
            }
            L4::Raw { proto } => (proto, vec![0u8; 16]),
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 0x01]);
        f.extend_from_slice(&self.mac_src);
        if let Some(id) = self.vlan {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
        }
        let (proto, l4) = self.l4_bytes();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&self.ethertype.unwrap_or(0x0800).to_be_bytes());
                let ihl = self
                    .ihl_override
                    .unwrap_or(5 + (self.ipv4_options / 4) as u8);
                let total = 20 + self.ipv4_options + l4.len();
                let version = self.version_override.unwrap_or(4);
                f.push((version << 4) | ihl);
                f.push(0);
                f.extend_from_slice(&(total as u16).to_be_bytes());
                f.extend_from_slice(&[0, 1]);
                f.extend_from_slice(&self.frag.to_be_bytes());
                f.push(self.hop_limit);
                f.push(proto);
                f.extend_from_slice(&[0, 0]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                f.extend(std::iter::repeat_n(1u8, self.ipv4_options)); // NOP options
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&self.ethertype.unwrap_or(0x86dd).to_be_bytes());
                let version = self.version_override.unwrap_or(6);
                f.extend_from_slice(&[version << 4, 0, 0, 0]);
                let payload = self.ipv6_ext.len() * 8 + l4.len();
                f.extend_from_slice(&(payload as u16).to_be_bytes());
                f.push(self.ipv6_ext.first().copied().unwrap_or(proto));
                f.push(self.hop_limit);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                for (i, _) in self.ipv6_ext.iter().enumerate() {
                    let next = self.ipv6_ext.get(i + 1).copied().unwrap_or(proto);
                    f.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
                }
            }
            _ => unreachable!("mixed address families"),
        }
        f.extend_from_slice(&l4);
        if let Some(len) = self.truncate {
            f.truncate(len);
        }
        f
    }
}
