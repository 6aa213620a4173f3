use super::*;
use crate::protocol::transfers::{
    Paired, Rng, Tr, assert_paired, junk_transfer, random_split, split_at, t, transfers,
};
use Direction::{Egress as Out, Ingress as In};

fn run(trs: &[Tr]) -> (Vec<RedisEvent>, RedisConn) {
    let mut conn = RedisConn::new();
    let mut out = Vec::new();
    for tr in trs {
        conn.feed(tr.dir, &tr.data, tr.len, tr.timing, &mut out);
    }
    (out, conn)
}

fn done(events: &[RedisEvent]) -> Vec<&RedisExchange> {
    events
        .iter()
        .filter_map(|e| match e {
            RedisEvent::Done { exchange, .. } => Some(exchange),
            _ => None,
        })
        .collect()
}

fn abandoned(events: &[RedisEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            RedisEvent::Abandoned { seq } => Some(*seq),
            _ => None,
        })
        .collect()
}

fn names(events: &[RedisEvent]) -> Vec<String> {
    done(events)
        .iter()
        .map(|x| x.command.name.clone())
        .collect()
}

/// A command as clients send it: an array of bulk strings.
fn cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

// Recorded with a loopback proxy between the clients and Redis 7.0.
// redis-cli starts with COMMAND DOCS; its 172 KB reply is cut here to the
// first bytes of each read, with each read's real length.
const CLI_DOCS_READS: &[(&[u8], u64)] = &[
    (b"*480\r\n$6\r\nxgroup\r\n*10\r\n$7\r\nsummary\r\n$40\r\nA container for consumer groups commands\r\n$5\r\nsince\r\n$5\r\n5.0.0\r\n$5\r\ngroup\r\n$6\r\nstream\r\n$10\r\ncomplexity\r\n$22\r\nDepends on subcommand.\r\n$11\r\nsubcommands\r\n*12\r\n$14\r\nxgroup|destroy\r\n*10\r\n$7\r\nsummary\r\n$25\r\nDestroy a consu", 65536),
    (b"5\r\nparameter_value\r\n$4\r\ntype\r\n$5\r\nblock\r\n$5\r\nflags\r\n*1\r\n+multiple\r\n$9\r\narguments\r\n*2\r\n*4\r\n$4\r\nname\r\n$9\r\nparameter\r\n$4\r\ntype\r\n$6\r\nstring\r\n*4\r\n$4\r\nname\r\n$5\r\nvalue\r\n$4\r\ntype\r\n$6\r\nstring\r\n$10\r\npfselftest\r\n*10\r\n$7\r\nsummary\r\n$50\r\nAn internal command for testing ", 65536),
    (b"ince\r\n$5\r\n3.0.2\r\n$5\r\nflags\r\n*1\r\n+optional\r\n$9\r\narguments\r\n*2\r\n*6\r\n$4\r\nname\r\n$2\r\nnx\r\n$4\r\ntype\r\n$10\r\npure-token\r\n$5\r\ntoken\r\n$2\r\nNX\r\n*6\r\n$4\r\nname\r\n$2\r\nxx\r\n$4\r\ntype\r\n$10\r\npure-token\r\n$5\r\ntoken\r\n$2\r\nXX\r\n*10\r\n$4\r\nname\r\n$10\r\ncomparison\r\n$4\r\ntype\r\n$5\r\noneof\r\n$5\r\ns", 41226),
];
// The redis-cli session around it: COMMAND DOCS, SET, GET, INCR on a
// string, SELECT 2, GET of a missing key, SCAN 0.
const CLI_SESSION: &[(Direction, &[u8])] = &[
    (Out, b"*2\r\n$7\r\nCOMMAND\r\n$4\r\nDOCS\r\n"),
    (Out, b"*3\r\n$3\r\nSET\r\n$6\r\nuser:1\r\n$5\r\nalice\r\n"),
    (In, b"+OK\r\n"),
    (Out, b"*2\r\n$3\r\nGET\r\n$6\r\nuser:1\r\n"),
    (In, b"$5\r\nalice\r\n"),
    (Out, b"*2\r\n$4\r\nINCR\r\n$6\r\nuser:1\r\n"),
    (In, b"-ERR value is not an integer or out of range\r\n"),
    (Out, b"*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n"),
    (In, b"+OK\r\n"),
    (Out, b"*2\r\n$3\r\nGET\r\n$5\r\nnokey\r\n"),
    (In, b"$-1\r\n"),
    (Out, b"*2\r\n$4\r\nSCAN\r\n$1\r\n0\r\n"),
    (In, b"*2\r\n$1\r\n0\r\n*0\r\n"),
];
// redis-py transaction pipeline: MULTI, INCRBY, LPUSH, LRANGE, EXEC in one write.
const MULTI_EXEC: &[(Direction, &[u8])] = &[
    (Out, b"*1\r\n$5\r\nMULTI\r\n*3\r\n$6\r\nINCRBY\r\n$3\r\nctr\r\n$1\r\n1\r\n*4\r\n$5\r\nLPUSH\r\n$3\r\nlst\r\n$1\r\na\r\n$1\r\nb\r\n*4\r\n$6\r\nLRANGE\r\n$3\r\nlst\r\n$1\r\n0\r\n$2\r\n-1\r\n*1\r\n$4\r\nEXEC\r\n"),
    (In, b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n:1\r\n:2\r\n*2\r\n$1\r\nb\r\n$1\r\na\r\n"),
];
// redis-py with protocol=3: HELLO 3, maps, sets, null, client tracking pushes.
const RESP3_SESSION: &[(Direction, &[u8])] = &[
    (Out, b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"),
    (In, b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:6\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"),
    (Out, b"*5\r\n$6\r\nCLIENT\r\n$19\r\nMAINT_NOTIFICATIONS\r\n$2\r\nON\r\n$20\r\nmoving-endpoint-type\r\n$13\r\ninternal-fqdn\r\n"),
    (In, b"-ERR unknown subcommand 'MAINT_NOTIFICATIONS'. Try CLIENT HELP.\r\n"),
    (Out, b"*4\r\n$6\r\nCLIENT\r\n$7\r\nSETINFO\r\n$8\r\nLIB-NAME\r\n$8\r\nredis-py\r\n"),
    (In, b"-ERR unknown subcommand 'SETINFO'. Try CLIENT HELP.\r\n"),
    (Out, b"*4\r\n$6\r\nCLIENT\r\n$7\r\nSETINFO\r\n$7\r\nLIB-VER\r\n$5\r\n8.1.0\r\n"),
    (In, b"-ERR unknown subcommand 'SETINFO'. Try CLIENT HELP.\r\n"),
    (Out, b"*6\r\n$4\r\nHSET\r\n$1\r\nh\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n"),
    (In, b":2\r\n"),
    (Out, b"*2\r\n$7\r\nHGETALL\r\n$1\r\nh\r\n"),
    (In, b"%2\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n"),
    (Out, b"*3\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n$2\r\nON\r\n"),
    (In, b"+OK\r\n"),
    (Out, b"*2\r\n$3\r\nGET\r\n$7\r\ntracked\r\n"),
    (In, b"_\r\n"),
    (In, b">2\r\n$10\r\ninvalidate\r\n*1\r\n$7\r\ntracked\r\n"),
    (Out, b"*1\r\n$4\r\nPING\r\n"),
    (In, b"+PONG\r\n"),
    (Out, b"*3\r\n$4\r\nSADD\r\n$1\r\ns\r\n$1\r\nx\r\n"),
    (In, b":1\r\n"),
    (Out, b"*2\r\n$8\r\nSMEMBERS\r\n$1\r\ns\r\n"),
    (In, b"~1\r\n$1\r\nx\r\n"),
];
// redis-py pub/sub over RESP2: SET, SUBSCRIBE, a message, UNSUBSCRIBE.
const SUBSCRIBE_RESP2: &[(Direction, &[u8])] = &[
    (
        Out,
        b"*4\r\n$6\r\nCLIENT\r\n$7\r\nSETINFO\r\n$8\r\nLIB-NAME\r\n$8\r\nredis-py\r\n",
    ),
    (
        In,
        b"-ERR unknown subcommand 'SETINFO'. Try CLIENT HELP.\r\n",
    ),
    (
        Out,
        b"*4\r\n$6\r\nCLIENT\r\n$7\r\nSETINFO\r\n$7\r\nLIB-VER\r\n$5\r\n8.1.0\r\n",
    ),
    (
        In,
        b"-ERR unknown subcommand 'SETINFO'. Try CLIENT HELP.\r\n",
    ),
    (Out, b"*3\r\n$3\r\nSET\r\n$6\r\nbefore\r\n$1\r\n1\r\n"),
    (In, b"+OK\r\n"),
    (Out, b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nnews\r\n"),
    (In, b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"),
    (In, b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n"),
    (Out, b"*2\r\n$11\r\nUNSUBSCRIBE\r\n$4\r\nnews\r\n"),
    (In, b"*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:0\r\n"),
];
// redis-py pub/sub over RESP3: SET, SUBSCRIBE, a message, UNSUBSCRIBE.
const SUBSCRIBE_RESP3: &[(Direction, &[u8])] = &[
    (Out, b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"),
    (In, b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:10\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"),
    (Out, b"*5\r\n$6\r\nCLIENT\r\n$19\r\nMAINT_NOTIFICATIONS\r\n$2\r\nON\r\n$20\r\nmoving-endpoint-type\r\n$13\r\ninternal-fqdn\r\n"),
    (In, b"-ERR unknown subcommand 'MAINT_NOTIFICATIONS'. Try CLIENT HELP.\r\n"),
    (Out, b"*4\r\n$6\r\nCLIENT\r\n$7\r\nSETINFO\r\n$8\r\nLIB-NAME\r\n$8\r\nredis-py\r\n"),
    (In, b"-ERR unknown subcommand 'SETINFO'. Try CLIENT HELP.\r\n"),
    (Out, b"*4\r\n$6\r\nCLIENT\r\n$7\r\nSETINFO\r\n$7\r\nLIB-VER\r\n$5\r\n8.1.0\r\n"),
    (In, b"-ERR unknown subcommand 'SETINFO'. Try CLIENT HELP.\r\n"),
    (Out, b"*3\r\n$3\r\nSET\r\n$6\r\nbefore\r\n$1\r\n1\r\n"),
    (In, b"+OK\r\n"),
    (Out, b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nnews\r\n"),
    (In, b">3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"),
    (In, b">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n"),
    (Out, b"*2\r\n$11\r\nUNSUBSCRIBE\r\n$4\r\nnews\r\n"),
    (In, b">3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:0\r\n"),
];

/// Complete recorded sessions (the redis-cli one is `cli_session()`).
const RECORDED: &[&[(Direction, &[u8])]] =
    &[MULTI_EXEC, RESP3_SESSION, SUBSCRIBE_RESP2, SUBSCRIBE_RESP3];

/// The redis-cli session with COMMAND DOCS's reply cut by the capture.
fn cli_session() -> Vec<Tr> {
    let mut trs = vec![Tr {
        dir: Out,
        data: CLI_SESSION[0].1.to_vec(),
        len: CLI_SESSION[0].1.len() as u64,
        timing: t(1),
    }];
    for (i, (data, len)) in CLI_DOCS_READS.iter().enumerate() {
        trs.push(Tr {
            dir: In,
            data: data.to_vec(),
            len: *len,
            timing: t(2 + i as u64),
        });
    }
    for (i, mut tr) in transfers(&CLI_SESSION[1..]).into_iter().enumerate() {
        tr.timing = t(5 + i as u64);
        trs.push(tr);
    }
    trs
}

#[test]
fn redis_cli_session() {
    let (events, conn) = run(&cli_session());
    assert_eq!(conn.requests_direction(), Some(Out));
    // COMMAND DOCS's reply runs past the capture: its command is
    // abandoned and the replies resume at the next reply's start.
    assert_eq!(abandoned(&events), vec![0]);
    assert_eq!(
        conn.errors(),
        ParseErrors {
            desyncs: 1,
            orphan_responses: 0
        }
    );
    let x = done(&events);
    let summary: Vec<_> = x
        .iter()
        .map(|x| {
            (
                x.command.name.as_str(),
                x.command.args,
                x.command.database,
                x.error.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("SET", 2, None, None),
            ("GET", 1, None, None),
            ("INCR", 1, None, Some("ERR")),
            ("SELECT", 1, Some(2), None),
            ("GET", 1, Some(2), None),
            ("SCAN", 1, Some(2), None),
        ]
    );
    assert_eq!(
        (
            x[0].request_start,
            x[0].request_end,
            x[0].response_start,
            x[0].response_end
        ),
        (t(5), t(5), t(6), t(6))
    );
    // Values never reach an event.
    assert!(!format!("{events:?}").contains("alice"));
    assert!(!format!("{events:?}").contains("not an integer"));
}

#[test]
fn pipeline_of_a_hundred_commands() {
    // As redis-py writes a non-transactional pipeline: one write, and the
    // replies arrive in one read.
    let mut write = Vec::new();
    let mut replies = Vec::new();
    for i in 0..100 {
        write.extend(cmd(&[
            b"SET",
            format!("k{i}").as_bytes(),
            i.to_string().as_bytes(),
        ]));
        replies.extend_from_slice(b"+OK\r\n");
    }
    assert_eq!((write.len(), replies.len()), (2980, 500));
    let trs = transfers(&[(Out, &write), (In, &replies)]);
    let (events, conn) = run(&trs);
    assert_eq!(conn.errors(), ParseErrors::default());
    let x = done(&events);
    assert_eq!(x.len(), 100);
    for (i, x) in x.iter().enumerate() {
        assert_eq!(
            (x.seq, x.command.name.as_str(), x.command.args),
            (i as u64, "SET", 2)
        );
        assert_eq!((x.request_start, x.response_end), (t(1), t(2)));
    }
}

#[test]
fn multi_exec_commands_are_exchanges_each() {
    let (events, conn) = run(&transfers(MULTI_EXEC));
    assert_eq!(conn.errors(), ParseErrors::default());
    assert_eq!(
        names(&events),
        ["MULTI", "INCRBY", "LPUSH", "LRANGE", "EXEC"]
    );
    assert_eq!(done(&events)[3].command.args, 3);
}

#[test]
fn resp3_maps_sets_and_pushes() {
    let (events, conn) = run(&transfers(RESP3_SESSION));
    assert_eq!(conn.errors(), ParseErrors::default());
    assert_eq!(
        names(&events),
        [
            "HELLO",
            "CLIENT MAINT_NOTIFICATIONS",
            "CLIENT SETINFO",
            "CLIENT SETINFO",
            "HSET",
            "HGETALL",
            "CLIENT TRACKING",
            "GET",
            "PING",
            "SADD",
            "SMEMBERS",
        ]
    );
    let x = done(&events);
    assert_eq!((x[2].command.args, x[2].error.as_deref()), (2, Some("ERR")));
    // The invalidation push between GET's reply and PING's is no reply.
    assert_eq!((x[8].response_start, x[8].response_end), (t(19), t(19)));
    assert!(conn.resp3);
}

#[test]
fn resp2_subscribe_stops_pairing() {
    let (events, conn) = run(&transfers(SUBSCRIBE_RESP2));
    assert_eq!(names(&events), ["CLIENT SETINFO", "CLIENT SETINFO", "SET"]);
    assert_eq!(conn.errors(), ParseErrors::default());
    assert!(conn.stopped);
    // Pipelined behind the SUBSCRIBE: abandoned, never paired.
    let mut trs = transfers(&SUBSCRIBE_RESP2[..6]);
    trs.push(Tr {
        dir: Out,
        data: [
            cmd(&[b"GET", b"a"]),
            cmd(&[b"SUBSCRIBE", b"c"]),
            cmd(&[b"PING"]),
        ]
        .concat(),
        len: 0,
        timing: t(7),
    });
    trs.push(Tr {
        dir: In,
        data: b"$1\r\n1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n".to_vec(),
        len: 0,
        timing: t(8),
    });
    let (events, _) = run(&trs);
    assert_eq!(
        names(&events),
        ["CLIENT SETINFO", "CLIENT SETINFO", "SET", "GET"]
    );
    assert_eq!(abandoned(&events), vec![4]);
}

#[test]
fn resp3_subscribe_keeps_pairing() {
    let mut trs = transfers(SUBSCRIBE_RESP3);
    trs.push(Tr {
        dir: Out,
        data: cmd(&[b"GET", b"before"]),
        len: 0,
        timing: t(16),
    });
    trs.push(Tr {
        dir: In,
        data: b">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$1\r\nx\r\n$1\r\n1\r\n".to_vec(),
        len: 0,
        timing: t(17),
    });
    let (events, conn) = run(&trs);
    assert_eq!(conn.errors(), ParseErrors::default());
    let x = done(&events);
    assert_eq!(names(&events).last().map(String::as_str), Some("GET"));
    assert_eq!(x.last().map(|x| x.response_start), Some(t(17)));
    assert!(!conn.stopped);
}

#[test]
fn huge_bulks_beyond_the_capture_are_skipped_by_count() {
    // As recorded: redis-py wrote SET big <10000 bytes> and then the
    // final CRLF in a second write.
    let set = cmd(&[b"SET", b"big", &[b'x'; 10_000]]);
    let get_reply = [b"$10000\r\n".as_slice(), &[b'x'; 10_000], b"\r\n"].concat();
    let trs = vec![
        Tr {
            dir: Out,
            data: set[..4096].to_vec(),
            len: set.len() as u64 - 2,
            timing: t(1),
        },
        Tr {
            dir: Out,
            data: b"\r\n".to_vec(),
            len: 2,
            timing: t(2),
        },
        Tr {
            dir: In,
            data: b"+OK\r\n".to_vec(),
            len: 5,
            timing: t(3),
        },
        Tr {
            dir: Out,
            data: cmd(&[b"GET", b"big"]),
            len: 22,
            timing: t(4),
        },
        Tr {
            dir: In,
            data: get_reply[..4096].to_vec(),
            len: get_reply.len() as u64,
            timing: t(5),
        },
        Tr {
            dir: Out,
            data: cmd(&[b"STRLEN", b"big"]),
            len: 25,
            timing: t(6),
        },
        Tr {
            dir: In,
            data: b":10000\r\n".to_vec(),
            len: 8,
            timing: t(7),
        },
    ];
    let (events, conn) = run(&trs);
    assert_eq!(conn.errors(), ParseErrors::default());
    assert_eq!(names(&events), ["SET", "GET", "STRLEN"]);
    let x = done(&events);
    assert_eq!((x[0].request_start, x[0].request_end), (t(1), t(2)));
    assert_eq!((x[1].response_start, x[1].response_end), (t(5), t(5)));
}

#[test]
fn every_split_of_every_transfer_gives_the_same_events() {
    let mut streams: Vec<Vec<Tr>> = RECORDED.iter().map(|s| transfers(s)).collect();
    streams.push(cli_session());
    for trs in &streams {
        let (whole, _) = run(trs);
        for k in 0..trs.len() {
            for at in 1..trs[k].data.len() {
                let (events, _) = run(&split_at(trs, k, at));
                assert_eq!(events, whole, "transfer {k} split at {at}");
            }
        }
    }
}

#[test]
fn random_splits_give_the_same_events() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut streams: Vec<Vec<Tr>> = RECORDED.iter().map(|s| transfers(s)).collect();
    streams.push(cli_session());
    streams.push(transfers(&[
        (Out, b"PING\r\nSET a b\r\n\r\nGET a\r\n"),
        (In, b"+PONG\r\n+OK\r\n$1\r\nb\r\n"),
        (
            Out,
            &[cmd(&[b"HGETALL", b"h"]), cmd(&[b"DEBUG", b"OBJECT", b"k"])].concat(),
        ),
        (
            In,
            b"|1\r\n+ttl\r\n:3\r\n%1\r\n+a\r\n*2\r\n#t\r\n_\r\n!10\r\nBUSY x y z\r\n",
        ),
    ]));
    for trs in &streams {
        let (whole, _) = run(trs);
        assert!(!done(&whole).is_empty());
        for round in 0..200 {
            let (events, _) = run(&random_split(trs, &mut rng));
            assert_eq!(events, whole, "round {round}");
        }
    }
}

#[test]
fn reply_types_and_errors() {
    let replies: &[(&[u8], Option<&str>)] = &[
        (
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            Some("WRONGTYPE"),
        ),
        (b"-MOVED 3999 127.0.0.1:6381\r\n", Some("MOVED")),
        (b"-something went wrong\r\n", Some("ERR")),
        (b"!21\r\nSYNTAX invalid syntax\r\n", Some("SYNTAX")),
        (b"$-1\r\n", None),
        (b"*-1\r\n", None),
        (b"_\r\n", None),
        (b",3.14\r\n", None),
        (b"(3492890328409238509324850943850943825024385\r\n", None),
        (b"#f\r\n", None),
        (b"=15\r\ntxt:Some string\r\n", None),
        (
            b"*3\r\n*2\r\n:1\r\n*1\r\n-ERR nested\r\n$0\r\n\r\n%0\r\n",
            None,
        ),
        (b"~2\r\n+a\r\n+b\r\n", None),
        (
            b"|1\r\n+key-popularity\r\n*2\r\n$1\r\na\r\n,0.1923\r\n*2\r\n:2039123\r\n:9543892\r\n",
            None,
        ),
        (b"*2\r\n|1\r\n+meta\r\n:1\r\n:5\r\n:6\r\n", None),
    ];
    for (reply, want) in replies {
        let mut conn = RedisConn::new();
        let mut out = Vec::new();
        conn.feed(Out, &cmd(&[b"GET", b"k"]), 0, t(1), &mut out);
        conn.feed(In, reply, 0, t(2), &mut out);
        let x = done(&out);
        assert_eq!(x.len(), 1, "{}", String::from_utf8_lossy(reply));
        assert_eq!(x[0].error.as_deref(), *want);
        assert_eq!(conn.errors(), ParseErrors::default());
        // Nothing left over: a second command pairs with a second reply.
        conn.feed(Out, &cmd(&[b"PING"]), 0, t(3), &mut out);
        conn.feed(In, b"+PONG\r\n", 0, t(4), &mut out);
        assert_eq!(done(&out).len(), 2);
    }
}

#[test]
fn inline_commands() {
    let trs = transfers(&[
        (Out, b"PING\r\nset  k  v\r\n\r\nCONFIG get maxmemory\n"),
        (In, b"+PONG\r\n+OK\r\n*0\r\n"),
    ]);
    let (events, conn) = run(&trs);
    assert_eq!(conn.errors(), ParseErrors::default());
    let x = done(&events);
    let summary: Vec<_> = x
        .iter()
        .map(|x| (x.command.name.as_str(), x.command.args))
        .collect();
    assert_eq!(summary, [("PING", 0), ("SET", 2), ("CONFIG GET", 1)]);
}

#[test]
fn lost_reply_bytes_abandon_and_resync() {
    let mut conn = RedisConn::new();
    let mut out = Vec::new();
    conn.feed(
        Out,
        &cmd(&[b"LRANGE", b"l", b"0", b"-1"]),
        0,
        t(1),
        &mut out,
    );
    let reply = b"*3\r\n$5\r\nfirst\r\n$6\r\nsecond\r\n$5\r\nthird\r\n";
    // The read with the middle of the reply is lost.
    conn.feed(In, &reply[..10], 0, t(2), &mut out);
    conn.feed(In, &reply[20..], 0, t(3), &mut out);
    assert_eq!(abandoned(&out), vec![0]);
    conn.feed(Out, &cmd(&[b"GET", b"a"]), 0, t(4), &mut out);
    conn.feed(In, b"$1\r\n1\r\n", 0, t(5), &mut out);
    assert_eq!(names(&out), ["GET"]);
    assert_eq!(
        conn.errors(),
        ParseErrors {
            desyncs: 1,
            orphan_responses: 0
        }
    );
}

#[test]
fn lost_command_bytes_resync_at_the_next_command() {
    let mut conn = RedisConn::new();
    let mut out = Vec::new();
    let mut write = Vec::new();
    for i in 0..300 {
        write.extend(cmd(&[b"INCR", format!("counter:{i}").as_bytes()]));
    }
    // Headers past the capture: the commands there are unknown.
    conn.feed(Out, &write[..4096], write.len() as u64, t(1), &mut out);
    let known = done(&out).len() + out.len();
    assert!(known > 100);
    let replies = b":1\r\n".repeat(300);
    conn.feed(In, &replies, 0, t(2), &mut out);
    let paired = done(&out).len();
    assert_eq!(paired + conn.errors().orphan_responses as usize, 300);
    // Junk in the command stream is skipped until a command starts one.
    conn.feed(Out, b"\x00\x01garbage", 0, t(3), &mut out);
    conn.feed(Out, &cmd(&[b"PING"]), 0, t(4), &mut out);
    conn.feed(In, b"+PONG\r\n", 0, t(5), &mut out);
    assert_eq!(names(&out).last().map(String::as_str), Some("PING"));
    assert_eq!(conn.errors().desyncs, 1);
}

#[test]
fn reply_older_than_its_command_is_an_orphan() {
    let mut conn = RedisConn::new();
    let mut out = Vec::new();
    conn.feed(Out, &cmd(&[b"GET", b"a"]), 0, t(5), &mut out);
    conn.feed(In, b"+OK\r\n", 0, t(3), &mut out);
    conn.feed(In, b"$1\r\n1\r\n", 0, t(6), &mut out);
    assert_eq!(done(&out).len(), 1);
    assert_eq!(done(&out)[0].response_start, t(6));
    assert_eq!(conn.errors().orphan_responses, 1);
}

#[test]
fn joining_mid_stream() {
    let mut conn = RedisConn::new();
    let mut out = Vec::new();
    // The tail of a reply, then a whole one nobody was seen asking for.
    conn.feed(In, b"lue\r\n$3\r\nabc\r\n", 0, t(1), &mut out);
    assert_eq!(conn.requests_direction(), None);
    conn.feed(In, b"+OK\r\n", 0, t(2), &mut out);
    assert_eq!(conn.requests_direction(), Some(Out));
    assert_eq!(conn.errors().orphan_responses, 1);
    conn.feed(Out, &cmd(&[b"DEL", b"a", b"b"]), 0, t(3), &mut out);
    conn.feed(In, b":2\r\n", 0, t(4), &mut out);
    assert_eq!(names(&out), ["DEL"]);
}

#[test]
fn an_array_reply_of_strings_is_not_taken_for_a_command() {
    let mut conn = RedisConn::new();
    let mut out = Vec::new();
    // Joined just before an LRANGE reply: strings, but no command name.
    conn.feed(In, b"*2\r\n$1\r\nb\r\n$1\r\na\r\n", 0, t(1), &mut out);
    assert_eq!(conn.requests_direction(), Some(Out));
    conn.feed(Out, &cmd(&[b"LLEN", b"l"]), 0, t(2), &mut out);
    conn.feed(In, b":2\r\n", 0, t(3), &mut out);
    assert_eq!(names(&out), ["LLEN"]);
    assert_eq!(conn.errors().orphan_responses, 1);
}

#[test]
fn server_side_view_takes_commands_from_ingress() {
    let trs = transfers(MULTI_EXEC);
    let flipped: Vec<Tr> = trs
        .iter()
        .map(|tr| Tr {
            dir: tr.dir.opposite(),
            ..tr.clone()
        })
        .collect();
    let (events, conn) = run(&flipped);
    assert_eq!(conn.requests_direction(), Some(In));
    assert_eq!(events, run(&trs).0);
}

#[test]
fn monitor_and_reply_off_stop_pairing() {
    for stopper in [cmd(&[b"MONITOR"]), cmd(&[b"CLIENT", b"REPLY", b"OFF"])] {
        let mut conn = RedisConn::new();
        let mut out = Vec::new();
        conn.feed(
            Out,
            &[cmd(&[b"PING"]), stopper, cmd(&[b"GET", b"x"])].concat(),
            0,
            t(1),
            &mut out,
        );
        conn.feed(
            In,
            b"+PONG\r\n+OK\r\n+1700000000.1 [0 127.0.0.1:1] \"GET\" \"x\"\r\n",
            0,
            t(2),
            &mut out,
        );
        conn.feed(Out, &cmd(&[b"GET", b"y"]), 0, t(3), &mut out);
        conn.feed(In, b"$1\r\n1\r\n", 0, t(4), &mut out);
        conn.close(&mut out);
        assert_eq!(names(&out), ["PING"]);
        assert_eq!(abandoned(&out), vec![1]);
    }
}

#[test]
fn close_abandons_pending() {
    let mut conn = RedisConn::new();
    let mut out = Vec::new();
    conn.feed(
        Out,
        &[cmd(&[b"BLPOP", b"q", b"0"]), cmd(&[b"PING"])].concat(),
        0,
        t(1),
        &mut out,
    );
    conn.close(&mut out);
    assert_eq!(abandoned(&out), vec![0, 1]);
}

#[test]
fn pending_commands_stay_bounded_and_paired() {
    let mut conn = RedisConn::new();
    let mut out = Vec::new();
    let n = MAX_PENDING as u64 + 10;
    for i in 0..n {
        conn.feed(Out, &cmd(&[b"PING"]), 0, t(i + 1), &mut out);
    }
    assert!(conn.pending.len() <= MAX_PENDING);
    // The first overflow folds two commands, each later one adds one.
    assert_eq!(abandoned(&out).len(), 11);
    for i in 0..n {
        conn.feed(In, b"+PONG\r\n", 0, t(5000 + i), &mut out);
    }
    let x = done(&out);
    assert_eq!((x.len(), x[0].seq), (MAX_PENDING - 1, 11));
    assert_eq!(conn.errors().orphan_responses, 0);
}

#[test]
fn detection() {
    assert!(looks_like_command(b"*1\r\n"));
    assert!(looks_like_command(b"*3\r\n$3\r\nSE"));
    assert!(looks_like_command(&cmd(&[b"SET", b"k", b"v"])));
    assert!(looks_like_command(b"PING\r\n"));
    assert!(looks_like_command(b"get key\r\n"));
    assert!(looks_like_command(b"GET key\n"));
    assert!(!looks_like_command(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert!(!looks_like_command(b"GET /index.html HTTP/1.0\r\n"));
    assert!(!looks_like_command(b"GET /index.html"));
    assert!(!looks_like_command(b"POST /x HTTP/1.1\r\n"));
    assert!(!looks_like_command(b"HTTP/1.1 200 OK\r\n"));
    assert!(!looks_like_command(b"FOO bar\r\n"));
    assert!(!looks_like_command(b"*12"));
    assert!(!looks_like_command(b"*abc\r\n"));
    assert!(!looks_like_command(b"*2\r\n:1\r\n:2\r\n"));
    assert!(!looks_like_command(b"*1\r\n$3\r\n{x}\r\n"));
    assert!(!looks_like_command(b"+OK\r\n"));
    assert!(!looks_like_command(b"Q\x00\x00\x00\rselect 1\x00"));
    assert!(!looks_like_command(&[0x16, 3, 1, 0, 0xa5]));
    assert!(!looks_like_command(b""));
}

#[test]
fn junk_never_panics_and_events_are_consistent() {
    let mut rng = Rng(7);
    let corpus: Vec<u8> = RECORDED
        .iter()
        .flat_map(|s| s.iter().flat_map(|(_, d)| d.to_vec()))
        .collect();
    for round in 0..2000 {
        let mut conn = RedisConn::new();
        let mut out = Vec::new();
        for i in 0..20 {
            let (dir, data, len) = junk_transfer(&mut rng, &corpus, 200);
            conn.feed(dir, &data, len, t(round * 100 + i), &mut out);
        }
        conn.close(&mut out);
        assert_paired(&out, |e| match e {
            RedisEvent::Start { seq, .. } => Paired::Start(*seq),
            RedisEvent::Done { seq, .. } | RedisEvent::Abandoned { seq } => Paired::Outcome(*seq),
        });
    }
}
