//! A task that misbehaves on request, for the adversarial test suite. Its input (stdin) is one
//! command; whatever it is told, it tries. A forbidden access that is denied ends the task with
//! exit status 13; one that succeeds prints what it got and exits 0, which the tests treat as a
//! sandbox failure.
//!
//! Commands: `ok TEXT` (echo, a good task), `spin`, `sleep`, `alloc`, `recurse`, `flood`,
//! `exit N`, `panic`, `file PATH`, `env`, `args`, `connect ADDR`, and through the host API
//! `spawn N MODULE` (a spawn bomb: N children, counting refusals), `progress N` (a flood of N
//! reports) and `secret NAME` (a config read of a secret).

use std::io::{Read, Write};

const DENIED: i32 = 13;

fn denied(what: &str, err: impl std::fmt::Display) -> ! {
    eprintln!("{what} denied: {err}");
    std::process::exit(DENIED)
}

#[inline(never)]
#[allow(unconditional_recursion)] // the point: recursion without end
fn recurse(depth: u64, buf: &mut [u8; 64]) -> u64 {
    buf[(depth % 64) as usize] = depth as u8;
    let mut next = [0u8; 64];
    recurse(depth + 1, &mut next) + buf[0] as u64
}

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("stdin");
    let (cmd, arg) = input.trim().split_once(' ').unwrap_or((input.trim(), ""));
    match cmd {
        "ok" => print!("{arg}"),
        "spin" => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "sleep" => std::thread::sleep(std::time::Duration::from_secs(3600)),
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "recurse" => {
            let mut buf = [0u8; 64];
            println!("{}", recurse(0, &mut buf));
        }
        "flood" => {
            let chunk = [b'x'; 65536];
            let mut out = std::io::stdout().lock();
            loop {
                if out.write_all(&chunk).is_err() {
                    // Still trying: a sandbox that merely fails writes has not stopped the flood.
                    continue;
                }
            }
        }
        "exit" => std::process::exit(arg.parse().unwrap_or(1)),
        "panic" => panic!("told to panic"),
        "file" => match std::fs::read_to_string(arg) {
            Ok(s) => print!("read {} bytes: {}", s.len(), s.lines().next().unwrap_or("")),
            Err(e) => denied("file", e),
        },
        "env" => {
            let vars: Vec<(String, String)> = std::env::vars().collect();
            if vars.is_empty() {
                denied("env", "no variables")
            }
            print!("{vars:?}");
        }
        "args" => print!("{:?}", std::env::args().collect::<Vec<_>>()),
        "connect" => match std::net::TcpStream::connect(arg) {
            Ok(_) => print!("connected to {arg}"),
            Err(e) => denied("connect", e),
        },
        "spawn" => {
            let (n, module) = arg.split_once(' ').unwrap_or((arg, "adv"));
            let n: u64 = n.parse().unwrap_or(1);
            let (mut spawned, mut refused, mut last) = (0u64, 0u64, String::new());
            for i in 0..n {
                match wasmq_sdk::spawn(module, format!("ok child-{i}").as_bytes(), &wasmq_sdk::SpawnOptions::default()) {
                    Ok(_) => spawned += 1,
                    Err(why) => {
                        refused += 1;
                        last = why;
                    }
                }
            }
            print!("spawned {spawned}, refused {refused}: {last}");
        }
        "progress" => {
            let n: u64 = arg.parse().unwrap_or(1_000_000);
            for i in 0..n {
                wasmq_sdk::progress(i as f32 / n as f32, &format!("report {i}"));
            }
            print!("reported {n} times");
        }
        "secret" => match wasmq_sdk::config(arg) {
            Some(v) => print!("read the secret: {v}"),
            None => denied("secret", format!("{arg} is not granted")),
        },
        other => {
            eprintln!("unknown command {other:?}");
            std::process::exit(2)
        }
    }
}
