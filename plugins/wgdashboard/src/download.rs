//! downloadPeer: a peer's client `.conf` in the original's layout, and a
//! file name for it that is safe everywhere.

use serde::Serialize;
use wasmgate_sdk::{Error, Response, kv};

use crate::api::Call;
use crate::envelope::{fail, ok};
use crate::store::{self, Conf, PeerRec};
use crate::validate;

#[derive(Serialize)]
struct Download {
    file: String,
    #[serde(rename = "fileName")]
    file_name: String,
}

/// The original's file name: the peer's name without spaces (or
/// "UntitledPeer"), "_", the configuration's name; here reduced to
/// letters, digits, '_', '-' and '#' so that it is safe as a file name
/// everywhere.
fn file_name(peer: &str, conf: &str) -> String {
    let base: String = peer.chars().filter(|c| !c.is_whitespace()).collect();
    let base = if base.is_empty() {
        "UntitledPeer".to_string()
    } else {
        base
    };
    let mut name: String = format!("{base}_{conf}")
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '#'))
        .collect();
    for reserved in [
        "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8", "com9", "lpt1", "lpt2",
        "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9", "con", "nul", "prn",
    ] {
        name = name.replace(reserved, "");
    }
    if name.is_empty() {
        "UntitledPeer".into()
    } else {
        name
    }
}

/// The client's `.conf`, in the original's layout.
pub fn client_conf(conf: &Conf, p: &PeerRec, remote_endpoint: &str) -> String {
    let host = match remote_endpoint.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]"),
        Err(_) => remote_endpoint.to_string(),
    };
    let mut text = format!(
        "[Interface]\nPrivateKey = {}\nAddress = {}\nMTU = {}\n\n",
        p.private_key, p.allowed_ip, p.mtu
    );
    if !p.dns.is_empty() {
        text.push_str(&format!("DNS = {}\n", p.dns));
    }
    text.push_str(&format!(
        "\n[Peer]\nPublicKey = {}\nAllowedIPs = {}\nEndpoint = {host}:{}\nPersistentKeepalive = {}\n",
        conf.public_key, p.endpoint_allowed_ip, conf.listen_port, p.keepalive
    ));
    if !p.preshared_key.is_empty() {
        text.push_str(&format!("PresharedKey = {}\n", p.preshared_key));
    }
    text
}

/// GET /api/downloadPeer/<configuration>?id= (or ?configurationName=&id=).
pub fn peer(call: &Call) -> Result<Response, Error> {
    let conf_name = call.configuration();
    let conf_name = conf_name.as_str();
    let id = call.query_key("id");
    let id = id.as_str();
    let Some(conf) = (if validate::is_name(conf_name) {
        store::conf(conf_name)?
    } else {
        None
    }) else {
        return Ok(fail("Configuration does not exist"));
    };
    let peer = if validate::is_key(id) {
        kv::get_json::<PeerRec>(&store::peer_key(&conf.name, id))?
    } else {
        None
    };
    let Some(peer) = peer else {
        return Ok(fail("Peer does not exist"));
    };
    let settings = store::settings()?;
    let remote = if valid_remote(&settings.remote_endpoint) {
        settings.remote_endpoint.as_str()
    } else {
        ""
    };
    Ok(ok(&Download {
        file: client_conf(&conf, &peer, remote),
        file_name: file_name(&peer.name, &conf.name),
    }))
}

/// The `remote_endpoint` setting goes into `.conf` text: an IP or a host name only.
fn valid_remote(text: &str) -> bool {
    text.parse::<std::net::IpAddr>().is_ok() || validate::is_hostname(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe() {
        assert_eq!(file_name("My Phone", "wg0"), "MyPhone_wg0");
        assert_eq!(file_name("", "wg0"), "UntitledPeer_wg0");
        assert_eq!(file_name("../../etc/passwd", "wg0"), "etcpasswd_wg0");
        assert_eq!(
            file_name("BulkPeer #1_20250101_000000", "wg0"),
            "BulkPeer#1_20250101_000000_wg0"
        );
    }

    #[test]
    fn the_client_conf_has_the_originals_layout() {
        let conf = Conf {
            name: "wg0".into(),
            address: "10.0.0.1/24".into(),
            listen_port: 51820,
            private_key: "server-private".into(),
            public_key: "SERVERPUB".into(),
            preshared_key: String::new(),
            pre_up: String::new(),
            pre_down: String::new(),
            post_up: String::new(),
            post_down: String::new(),
        };
        let p = PeerRec {
            id: "CLIENTPUB".into(),
            private_key: "CLIENTPRIV".into(),
            preshared_key: "PSK".into(),
            allowed_ip: "10.0.0.2/32".into(),
            dns: "1.1.1.1".into(),
            endpoint_allowed_ip: "0.0.0.0/0".into(),
            mtu: 1420,
            keepalive: 21,
            ..PeerRec::default()
        };
        let text = client_conf(&conf, &p, "203.0.113.1");
        assert_eq!(
            text,
            "[Interface]\nPrivateKey = CLIENTPRIV\nAddress = 10.0.0.2/32\nMTU = 1420\n\nDNS = 1.1.1.1\n\n[Peer]\nPublicKey = SERVERPUB\nAllowedIPs = 0.0.0.0/0\nEndpoint = 203.0.113.1:51820\nPersistentKeepalive = 21\nPresharedKey = PSK\n"
        );
        assert!(!text.contains("server-private"));
        assert!(client_conf(&conf, &p, "2001:db8::1").contains("Endpoint = [2001:db8::1]:51820"));
    }
}
