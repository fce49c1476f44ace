//! wss:// and mTLS: the reference server with certificates from a CA made
//! in the test, and the native transport as the client.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use steadfast::transport::{ConnectOptions, Message, Socket, SocketEvent, TlsOptions};
use steadfast_server::cli::ServeArgs;
use steadfast_server::{ClientAuth, Handler, Payload, Peer, ServerConfig, ServerHandle, TlsConfig};
use steadfast_testkit::pki::{Identity, TestCa};
use steadfast_testkit::{eventually, TestServer};

const WAIT: Duration = Duration::from_secs(20);

/// Answers every message with who the client is: the common name's bytes
/// are in the certificate, so reply with whether one was presented and
/// its DER length.
struct WhoAmI;

impl Handler for WhoAmI {
    fn on_message(&self, server: &ServerHandle, peer: &Peer, message: Payload) {
        let who = match &peer.client_certificate {
            Some(der) => format!("cert:{}", der.len()),
            None => "anonymous".to_owned(),
        };
        let text = match message {
            Payload::Text(text) => text,
            Payload::Binary(_) => String::new(),
        };
        let _ = server.send(peer.id, Payload::Text(format!("{who} {text}")));
    }
}

fn server_config(ca: &TestCa, client_auth: ClientAuth) -> ServerConfig {
    let Identity { cert_pem, key_pem } = ca.server();
    let mut config = ServerConfig::default();
    config.tls = Some(
        TlsConfig::from_pem(cert_pem.as_bytes(), key_pem.as_bytes(), client_auth)
            .expect("the test CA's certificate is usable"),
    );
    config
}

fn trusting(ca: &TestCa) -> TlsOptions {
    TlsOptions::default()
        .no_system_roots()
        .ca_pem(ca.cert_pem())
}

async fn connect(url: &str, tls: TlsOptions) -> Result<Socket, steadfast::Error> {
    let options = ConnectOptions::default().tls(tls);
    tokio::time::timeout(WAIT, Socket::connect(url, &options))
        .await
        .expect("connect finishes in time")
}

/// Send `text`, return the first text message that comes back.
async fn round_trip(socket: &mut Socket, text: &str) -> String {
    socket
        .send(Message::Text(text.to_owned()))
        .expect("socket open");
    loop {
        match tokio::time::timeout(WAIT, socket.next_event()).await {
            Ok(Some(SocketEvent::Message(Message::Text(reply)))) => return reply,
            Ok(Some(SocketEvent::Message(_))) => continue,
            other => panic!("no reply to {text:?}: {other:?}"),
        }
    }
}

fn failures(server: &TestServer) -> u64 {
    server
        .handle()
        .metrics()
        .get("tls_handshake_failures")
        .expect("the counter exists")
}

#[tokio::test]
async fn wss_echoes_with_a_ca_made_in_the_test() {
    let ca = TestCa::new("steadfast test CA");
    let server = TestServer::start_with(server_config(&ca, ClientAuth::None), WhoAmI)
        .await
        .expect("bind loopback");
    let url = server.url();
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
    let mut socket = connect(&url, trusting(&ca)).await.expect("wss connects");
    assert_eq!(round_trip(&mut socket, "hello").await, "anonymous hello");
    // The host name in the certificate works as well as the IP address.
    let by_name = url.replace("127.0.0.1", "localhost");
    let mut socket = connect(&by_name, trusting(&ca)).await.expect("by name");
    assert_eq!(round_trip(&mut socket, "again").await, "anonymous again");
    assert_eq!(failures(&server), 0);
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_a_tls_error_unless_insecure() {
    let ca = TestCa::new("steadfast test CA");
    let stranger = TestCa::new("someone else");
    let server = TestServer::start_with(server_config(&ca, ClientAuth::None), WhoAmI)
        .await
        .expect("bind loopback");
    let error = connect(&server.url(), trusting(&stranger))
        .await
        .expect_err("a certificate from an unknown CA is refused");
    assert_eq!(error.code(), "ERR_TLS", "{error}");
    let mut socket = connect(&server.url(), TlsOptions::default().insecure())
        .await
        .expect("insecure mode accepts any certificate");
    assert_eq!(round_trip(&mut socket, "x").await, "anonymous x");
}

#[tokio::test]
async fn malformed_tls_options_are_refused_before_connecting() {
    let error = connect(
        "wss://127.0.0.1:9/",
        TlsOptions::default().no_system_roots().ca_pem("not a pem"),
    )
    .await
    .expect_err("no certificate in the PEM");
    assert_eq!(error.code(), "ERR_TLS");
    let ca = TestCa::new("ca");
    let error = connect(
        "wss://127.0.0.1:9/",
        trusting(&ca).client_identity_pem(ca.client("c").cert_pem, "no key here"),
    )
    .await
    .expect_err("no key in the PEM");
    assert_eq!(error.code(), "ERR_TLS");
    let bad = TlsConfig::from_pem(b"junk", b"junk", ClientAuth::None).expect_err("junk");
    assert_eq!(bad.code(), "ERR_TLS_CERTIFICATE");
    let id = ca.server();
    let bad = TlsConfig::from_pem(id.cert_pem.as_bytes(), b"junk", ClientAuth::None)
        .expect_err("junk key");
    assert_eq!(bad.code(), "ERR_TLS_PRIVATE_KEY");
}

#[tokio::test]
async fn mtls_admits_the_ca_s_clients_and_refuses_others() {
    let ca = TestCa::new("server CA");
    let clients = TestCa::new("client CA");
    let intruders = TestCa::new("intruder CA");
    let config = server_config(&ca, ClientAuth::Required(clients.cert_pem().into_bytes()));
    let server = TestServer::start_with(config, WhoAmI)
        .await
        .expect("bind loopback");
    let url = server.url();

    let alice = clients.client("alice");
    let mut socket = connect(
        &url,
        trusting(&ca).client_identity_pem(alice.cert_pem.clone(), alice.key_pem.clone()),
    )
    .await
    .expect("a client certificate from the client CA is admitted");
    let reply = round_trip(&mut socket, "hi").await;
    assert!(
        reply.starts_with("cert:") && reply.ends_with(" hi"),
        "{reply}"
    );
    assert_eq!(failures(&server), 0);

    // A certificate from another CA, and no certificate: both refused in
    // the TLS handshake. (With TLS 1.3 the client learns it on its first
    // read, so the error may be reported as TLS or as the connection
    // closing during the WebSocket handshake.)
    let mallory = intruders.client("mallory");
    let refused = connect(
        &url,
        trusting(&ca).client_identity_pem(mallory.cert_pem, mallory.key_pem),
    )
    .await
    .expect_err("a certificate from another CA is refused");
    assert!(
        matches!(refused.code(), "ERR_TLS" | "ERR_CONNECT"),
        "{refused}"
    );
    let refused = connect(&url, trusting(&ca))
        .await
        .expect_err("no client certificate is refused");
    assert!(
        matches!(refused.code(), "ERR_TLS" | "ERR_CONNECT"),
        "{refused}"
    );
    // The server counts the failure after it sent its alert: wait for it.
    eventually("two failed handshakes", WAIT, || failures(&server) >= 2).await;
    assert_eq!(failures(&server), 2);
    assert_eq!(
        server.handle().metrics().get("connections_total"),
        Some(1),
        "only alice got as far as a WebSocket"
    );
}

#[tokio::test]
async fn optional_client_certificates_admit_both_and_tell_the_application() {
    let ca = TestCa::new("server CA");
    let clients = TestCa::new("client CA");
    let config = server_config(&ca, ClientAuth::Optional(clients.cert_pem().into_bytes()));
    let server = TestServer::start_with(config, WhoAmI)
        .await
        .expect("bind loopback");
    let bob = clients.client("bob");
    let mut with = connect(
        &server.url(),
        trusting(&ca).client_identity_pem(bob.cert_pem, bob.key_pem),
    )
    .await
    .expect("certificate presented");
    let mut without = connect(&server.url(), trusting(&ca))
        .await
        .expect("no certificate is fine when optional");
    assert!(round_trip(&mut with, "a").await.starts_with("cert:"));
    assert_eq!(round_trip(&mut without, "b").await, "anonymous b");
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

/// `steadfast serve --tls-cert --tls-key --tls-client-ca` builds a working
/// mTLS server from files.
#[tokio::test]
async fn serve_flags_make_an_mtls_server_from_pem_files() {
    let ca = TestCa::new("server CA");
    let clients = TestCa::new("client CA");
    let dir = std::env::temp_dir().join(format!(
        "steadfast-tls-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let server_id = ca.server();
    let files = [
        ("cert.pem", server_id.cert_pem),
        ("key.pem", server_id.key_pem),
        ("clients.pem", clients.cert_pem()),
    ];
    for (name, text) in &files {
        std::fs::write(dir.join(name), text).expect("write PEM");
    }
    let arg = |flag: &str, name: &str| format!("--{flag}={}", dir.join(name).display());
    let args = Cli::try_parse_from([
        "serve".to_owned(),
        arg("tls-cert", "cert.pem"),
        arg("tls-key", "key.pem"),
        arg("tls-client-ca", "clients.pem"),
    ])
    .expect("valid flags")
    .serve;
    let config = args.config(None).expect("the files are usable");
    let _ = std::fs::remove_dir_all(&dir);
    let server = TestServer::start_with(config, WhoAmI)
        .await
        .expect("bind loopback");
    let carol = Arc::new(clients.client("carol"));
    let mut socket = connect(
        &server.url(),
        trusting(&ca).client_identity_pem(carol.cert_pem.clone(), carol.key_pem.clone()),
    )
    .await
    .expect("mTLS from the flags admits the client CA's client");
    assert!(round_trip(&mut socket, "c").await.starts_with("cert:"));
    assert!(connect(&server.url(), trusting(&ca)).await.is_err());
}

/// The reliable client over wss with a client certificate: messages are
/// delivered and acknowledged as over ws.
#[tokio::test]
async fn the_reliable_client_works_over_mtls() {
    let ca = TestCa::new("server CA");
    let clients = TestCa::new("client CA");
    let config = server_config(&ca, ClientAuth::Required(clients.cert_pem().into_bytes()));
    let server = TestServer::start_with(config, WhoAmI)
        .await
        .expect("bind loopback");
    let dave = clients.client("dave");
    let client = steadfast::Client::builder(server.url())
        .tls(trusting(&ca).client_identity_pem(dave.cert_pem, dave.key_pem))
        .connect()
        .await
        .expect("valid options");
    let receipt = client.send("over tls").await.expect("queued");
    assert_eq!(
        tokio::time::timeout(WAIT, receipt).await.expect("in time"),
        Ok(steadfast::Delivery::Acked)
    );
    loop {
        match tokio::time::timeout(WAIT, client.next_event())
            .await
            .expect("in time")
        {
            Some(steadfast::ClientEvent::Message(Payload::Text(reply))) => {
                assert!(
                    reply.starts_with("cert:") && reply.ends_with(" over tls"),
                    "{reply}"
                );
                break;
            }
            Some(_) => {}
            None => panic!("client ended"),
        }
    }
    assert_eq!(
        client.state(),
        steadfast::ConnectionState::Open {
            mode: steadfast::Mode::Reliable
        }
    );
}
