//! `steadfast`: the command line.
//!
//! - `steadfast connect URL [-p PROTO] [-H 'Name: value']`: wscat-like; each
//!   line of standard input is sent as a text message, every message
//!   received is printed (`< ` text, `<b ` binary as hex).
//! - `steadfast serve [OPTIONS]`: run the reference server, with every
//!   option of `steadfast-server` (TLS, JWT, limits, fault injection).

#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use steadfast::transport::{ConnectOptions, Message, Socket, SocketEvent};
use steadfast_server::cli::{self, ServeArgs};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Debug, Parser)]
#[command(
    name = "steadfast",
    version,
    about = "WebSocket client and reference server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect to a WebSocket server; send stdin lines, print what arrives.
    Connect {
        /// ws:// or wss:// URL.
        url: String,
        /// Offer a subprotocol (repeatable).
        #[arg(short = 'p', long = "protocol")]
        protocols: Vec<String>,
        /// Add a handshake header, as 'Name: value' (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
    },
    /// Run the reference server (reliable sessions and plain WebSocket,
    /// /healthz and /metrics on the same port).
    Serve(Box<ServeArgs>),
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Connect {
            url,
            protocols,
            headers,
        } => connect(&url, protocols, &headers).await,
        Command::Serve(args) => return cli::serve("steadfast serve", *args).await,
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("steadfast: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(
    url: &str,
    protocols: Vec<String>,
    headers: &[String],
) -> Result<ExitCode, String> {
    let mut options = ConnectOptions::default().protocols(protocols);
    for header in headers {
        let (name, value) = header.split_once(':').ok_or_else(|| {
            format!("[ERR_INVALID_OPTION] header {header:?} is not 'Name: value'")
        })?;
        options = options.header(name.trim(), value.trim());
    }
    let mut socket = Socket::connect(url, &options)
        .await
        .map_err(|e| format!("[{}] {e}", e.code()))?;
    println!(
        "connected to {url}{}",
        match socket.protocol() {
            Some(p) => format!(" (subprotocol {p})"),
            None => String::new(),
        }
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) => {
                    if let Err(e) = socket.send(Message::Text(line)) {
                        return Err(format!("[{}] {e}", e.code()));
                    }
                }
                // End of input: close politely and wait for the close.
                Ok(None) | Err(_) => {
                    stdin_open = false;
                    let _ = socket.close(1000, "");
                }
            },
            event = socket.next_event() => match event {
                Some(SocketEvent::Message(Message::Text(text))) => println!("< {text}"),
                Some(SocketEvent::Message(Message::Binary(bytes))) => println!("<b {}", hex(&bytes)),
                Some(SocketEvent::Error(error)) => eprintln!("error: {error}"),
                Some(SocketEvent::Closed(close)) => {
                    println!("closed: {} {}", close.code, close.reason);
                    return Ok(if close.code == 1000 { ExitCode::SUCCESS } else { ExitCode::from(3) });
                }
                None => return Ok(ExitCode::SUCCESS),
            },
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
