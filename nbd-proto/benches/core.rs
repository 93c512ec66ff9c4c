//! Benchmarks of the protocol core alone (no sockets): how many replies per
//! second the client decodes and how many requests per second it encodes.
//!
//! Run with `cargo bench -p nbd-proto --bench core`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use nbd_proto::client::{Client, Command, CommandKind, Config, Event, State};
use nbd_proto::consts::{handshake_flags, opt, transmission_flags as tf};
use nbd_proto::wire::handshake::NewstyleGreeting;
use nbd_proto::wire::option::{Info, OptionReply};
use nbd_proto::wire::reply::{ChunkHeader, SimpleReply};

const N: u64 = 1024;
const LEN: u64 = 4096;

fn ready(structured: bool) -> Client {
    let mut c = Client::new({
        let mut config = Config::default();
        config.request_structured_replies = structured;
        config.request_extended_headers = false;
        config.request_block_size = false;
        config
    });
    let mut v = Vec::new();
    NewstyleGreeting {
        handshake_flags: handshake_flags::FIXED_NEWSTYLE | handshake_flags::NO_ZEROES,
    }
    .encode(&mut v);
    if structured {
        OptionReply::Ack.encode(opt::STRUCTURED_REPLY, &mut v);
    }
    OptionReply::Info(Info::Export {
        size: 1 << 40,
        transmission_flags: tf::HAS_FLAGS | tf::SEND_FLUSH,
    })
    .encode(opt::GO, &mut v);
    OptionReply::Ack.encode(opt::GO, &mut v);
    assert_eq!(c.feed(&v, &mut |_, _, _| {}), v.len());
    let mut out = Vec::new();
    c.take_output(&mut out, &mut |_, _, _| &[]);
    while c.poll_event().is_some() {}
    assert_eq!(c.state(), State::Ready);
    c
}

fn with_reads(structured: bool) -> Client {
    let mut c = ready(structured);
    for i in 0..N {
        c.submit(Command::new(CommandKind::Read, i * LEN, LEN))
            .unwrap();
    }
    let mut out = Vec::new();
    c.take_output(&mut out, &mut |_, _, _| &[]);
    c
}

fn replies(structured: bool) -> Vec<u8> {
    let mut v = Vec::new();
    let data = vec![0xa5u8; LEN as usize];
    for cookie in 1..=N {
        if structured {
            ChunkHeader {
                flags: 1,
                chunk_type: nbd_proto::consts::reply_type::OFFSET_DATA,
                cookie,
                offset: None,
                length: 8 + LEN,
            }
            .encode(&mut v)
            .unwrap();
            v.extend_from_slice(&((cookie - 1) * LEN).to_be_bytes());
        } else {
            SimpleReply { error: 0, cookie }.encode(&mut v);
        }
        v.extend_from_slice(&data);
    }
    v
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_4k_read_replies");
    g.throughput(Throughput::Elements(N));
    for structured in [false, true] {
        let stream = replies(structured);
        let name = if structured { "structured" } else { "simple" };
        g.bench_function(name, |b| {
            b.iter_batched(
                || with_reads(structured),
                |mut client| {
                    let mut payload = 0usize;
                    let _ = client.feed(&stream, &mut |_, _, d| payload += d.len());
                    let mut done = 0;
                    while let Some(e) = client.poll_event() {
                        if matches!(e, Event::Complete { result: Ok(()), .. }) {
                            done += 1;
                        }
                    }
                    assert_eq!(done, N);
                    assert_eq!(payload as u64, N * LEN);
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
    let mut g = c.benchmark_group("payload_bookkeeping_bytes");
    g.throughput(Throughput::Bytes(N * LEN));
    let stream = replies(true);
    g.bench_function("structured_4k", |b| {
        b.iter_batched(
            || with_reads(true),
            |mut client| {
                let _ = client.feed(&stream, &mut |_, _, _| {});
                while client.poll_event().is_some() {}
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_requests");
    g.throughput(Throughput::Elements(N));
    g.bench_function("read_4k", |b| {
        b.iter_batched(
            || (ready(true), Vec::with_capacity((N * 32) as usize)),
            |(mut client, mut out)| {
                for i in 0..N {
                    client
                        .submit(Command::new(CommandKind::Read, i * LEN, LEN))
                        .unwrap();
                }
                client.take_output(&mut out, &mut |_, _, _| &[]);
                assert_eq!(out.len() as u64, N * 28);
            },
            BatchSize::LargeInput,
        )
    });
    let payload = bytes::Bytes::from(vec![0u8; LEN as usize]);
    g.bench_function("write_4k_owned_payload", |b| {
        b.iter_batched(
            || ready(true),
            |mut client| {
                for i in 0..N {
                    client
                        .submit(Command::write(i * LEN, payload.clone()))
                        .unwrap();
                }
                while client.wants_write() {
                    let total: usize = {
                        let mut segs = [nbd_proto::client::Segment::Bytes(&[]); 64];
                        let n = client.transmit_segments(&mut segs);
                        segs[..n].iter().map(|s| s.len()).sum()
                    };
                    client.advance_transmit(total);
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
