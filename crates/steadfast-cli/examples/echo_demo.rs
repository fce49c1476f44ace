//! Connect to an echo server, exchange text and binary messages, ask the
//! server to close, and print everything that happens.
//!
//! `cargo run -p steadfast-cli --example echo_demo -- ws://127.0.0.1:9000`
//! (`cargo xtask demo` starts the server and runs this for you.)

#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use steadfast::transport::{ConnectOptions, Message, Socket, SocketEvent};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: echo_demo ws://HOST:PORT");
        return ExitCode::from(2);
    };
    match run(&url).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo failed [{}]: {error}", error.code());
            ExitCode::FAILURE
        }
    }
}

async fn run(url: &str) -> Result<(), steadfast::Error> {
    let options = ConnectOptions::default().protocols(["steadfast.echo"]);
    let mut socket = Socket::connect(url, &options).await?;
    println!("open      {url} (subprotocol: {:?})", socket.protocol());

    let outgoing = [
        Message::Text("hello, steadfast".into()),
        Message::Binary(vec![0, 1, 2, 253, 254, 255]),
        Message::Text("ünïcödé ✓".into()),
    ];
    for message in &outgoing {
        println!("send      {}", describe(message));
        socket.send(message.clone())?;
    }
    let mut echoed = 0;
    while let Some(event) = socket.next_event().await {
        match event {
            SocketEvent::Message(message) => {
                let same = outgoing.get(echoed) == Some(&message);
                println!(
                    "receive   {} {}",
                    describe(&message),
                    if same {
                        "(echo matches)"
                    } else {
                        "(UNEXPECTED)"
                    }
                );
                if !same {
                    return Err(steadfast::Error::Connect("the echo did not match".into()));
                }
                echoed += 1;
                if echoed == outgoing.len() {
                    println!("ask       the server to close with 4000 \"demo done\"");
                    socket.send(Message::Text("steadfast-echo:close:4000:demo done".into()))?;
                }
            }
            SocketEvent::Error(error) => println!("error     {error}"),
            SocketEvent::Closed(close) => {
                println!(
                    "closed    code {} reason {:?} clean {}",
                    close.code, close.reason, close.was_clean
                );
            }
        }
    }
    println!("done      {echoed}/{} messages echoed", outgoing.len());
    Ok(())
}

fn describe(message: &Message) -> String {
    match message {
        Message::Text(text) => format!("text   {text:?}"),
        Message::Binary(bytes) => format!("binary {bytes:?}"),
    }
}
