//! TLS to ScyllaDB (`--scylla-tls-*`): the store talks to a node that serves TLS only (the
//! stand-in with certificates made here by rcgen), verifies the node by its IP address or by
//! a configured name, and refuses an unknown authority, a wrong name and plaintext. These
//! always run on the stand-in: the certificates are the test's own.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use mmsub_history::store::HistoryStore;
use mmsub_history::tls::{Tls, TlsFiles};
use mmsub_history::HistoryConfig;
use rcgen::{BasicConstraints, Certificate, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use scylla_standin::Standin;
use support::post;

/// A certificate authority and the directory its files are written to.
struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

impl Authority {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mmsub-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), issuer.pem()).unwrap();
        Authority { issuer, dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by this authority, with
    /// its key.
    fn node(&self, names: &[&str]) -> (Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert, key)
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn tls_node(authority: &Authority, names: &[&str]) -> Standin {
    tls_node_with(authority, names, None).await
}

/// A TLS-only node; with `clients`, it requires client certificates signed by that authority.
async fn tls_node_with(
    authority: &Authority,
    names: &[&str],
    clients: Option<&Authority>,
) -> Standin {
    let (certificate, key) = authority.node(names);
    let chain = vec![certificate.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let client_roots = clients.map(|a| vec![a.issuer.der().clone()]);
    let tls = scylla_standin::tls::from_der(chain, key, client_roots).unwrap();
    let standin = Standin::start_tls("127.0.0.1:0".parse().unwrap(), None, tls)
        .await
        .unwrap();
    eprintln!("TLS tests: scylla-standin (TLS only) at {}", standin.addr());
    standin
}

fn config(standin: &Standin, keyspace: &str, tls: Option<Tls>) -> HistoryConfig {
    let mut config = HistoryConfig::development(vec![standin.addr().to_string()]);
    config.keyspace = format!("{keyspace}_{}", std::process::id());
    config.request_timeout = Duration::from_secs(1);
    config.tls = tls;
    config
}

fn tls(ca: PathBuf, server_name: Option<&str>) -> Tls {
    Tls::load(TlsFiles {
        ca,
        server_name: server_name.map(str::to_string),
        client: None,
    })
    .unwrap()
}

/// Connects, writes a post and reads it back as the last post.
async fn round_trip(config: &HistoryConfig) {
    let store = HistoryStore::connect(config)
        .await
        .expect("connects over TLS and migrates");
    store
        .write_post(&post("c", "p1", mmsub_history::now_ms()))
        .await
        .unwrap();
    let last = store
        .last_post("c")
        .await
        .unwrap()
        .expect("the post is read back");
    assert_eq!(last.id, "p1");
    assert_eq!(last.message, "text of p1");
}

#[tokio::test]
async fn the_store_works_over_tls_verifying_the_node_by_its_address() {
    let authority = Authority::new("by-address");
    let standin = tls_node(&authority, &["127.0.0.1"]).await;
    round_trip(&config(&standin, "tls_ip", Some(tls(authority.ca(), None)))).await;
    assert!(standin.requests() > 0, "the statements went over TLS");
}

#[tokio::test]
async fn a_configured_server_name_verifies_certificates_that_name_a_host() {
    let authority = Authority::new("by-name");
    let standin = tls_node(&authority, &["scylla.example.internal"]).await;
    let by_address = config(&standin, "tls_name", Some(tls(authority.ca(), None)));
    assert!(
        HistoryStore::connect(&by_address).await.is_err(),
        "a certificate without the node's IP is refused when no name is configured"
    );
    let by_name = Some(tls(authority.ca(), Some("scylla.example.internal")));
    round_trip(&config(&standin, "tls_name", by_name)).await;
    let wrong_name = Some(tls(authority.ca(), Some("other.example.internal")));
    assert!(
        HistoryStore::connect(&config(&standin, "tls_name", wrong_name))
            .await
            .is_err(),
        "a certificate for another name is refused"
    );
}

#[tokio::test]
async fn an_unknown_authority_and_a_plaintext_client_are_refused() {
    let authority = Authority::new("trusted");
    let stranger = Authority::new("stranger");
    let standin = tls_node(&authority, &["127.0.0.1"]).await;
    let started = std::time::Instant::now();
    let untrusted = Some(tls(stranger.ca(), None));
    assert!(
        HistoryStore::connect(&config(&standin, "tls_untrusted", untrusted))
            .await
            .is_err(),
        "a node signed by an authority not in --scylla-tls-ca is refused"
    );
    assert!(
        HistoryStore::connect(&config(&standin, "tls_plain", None))
            .await
            .is_err(),
        "a plaintext client gets nothing from a TLS-only node"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "refusals come within the connect timeouts, not a hang"
    );
    assert_eq!(standin.requests(), 0, "no statement ran");
}

#[tokio::test]
async fn a_client_certificate_is_presented_to_a_node_that_requires_one() {
    let authority = Authority::new("mutual");
    let clients = Authority::new("clients");
    let standin = tls_node_with(&authority, &["127.0.0.1"], Some(&clients)).await;
    assert!(
        HistoryStore::connect(&config(
            &standin,
            "tls_mutual",
            Some(tls(authority.ca(), None))
        ))
        .await
        .is_err(),
        "without --scylla-tls-cert the node refuses the client"
    );
    let (certificate, key) = clients.node(&["mmsub"]);
    let cert = clients.dir.join("client.pem");
    let key_file = clients.dir.join("client-key.pem");
    std::fs::write(&cert, certificate.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let mutual = Tls::load(TlsFiles {
        ca: authority.ca(),
        server_name: None,
        client: Some((cert, key_file)),
    })
    .unwrap();
    round_trip(&config(&standin, "tls_mutual", Some(mutual))).await;
}

#[test]
fn bad_tls_files_are_clear_errors_at_start_up() {
    let authority = Authority::new("files");
    let load = |ca: PathBuf, server_name: Option<&str>, client: Option<(PathBuf, PathBuf)>| {
        Tls::load(TlsFiles {
            ca,
            server_name: server_name.map(str::to_string),
            client,
        })
        .unwrap_err()
    };
    let missing = authority.dir.join("missing.pem");
    assert!(load(missing.clone(), None, None).contains("missing.pem"));
    let empty = authority.dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    assert!(load(empty.clone(), None, None).contains("no usable certificate"));
    assert!(load(authority.ca(), Some("not a name!"), None).contains("--scylla-tls-server-name"));
    assert!(load(authority.ca(), None, Some((authority.ca(), empty))).contains("--scylla-tls-key"));
}
