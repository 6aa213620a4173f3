use super::*;
use crate::protocol::transfers::{
    Paired, Rng, Tr, assert_paired, junk_transfer, random_split, split_at, t, transfers,
};
use Direction::{Egress as Out, Ingress as In};

fn feed_all(conn: &mut PgConn, trs: &[Tr]) -> Vec<PgEvent> {
    let mut out = Vec::new();
    for tr in trs {
        conn.feed(tr.dir, &tr.data, tr.len, tr.timing, &mut out);
    }
    out
}

fn run(trs: &[Tr]) -> (Vec<PgEvent>, PgConn) {
    let mut conn = PgConn::new();
    let out = feed_all(&mut conn, trs);
    (out, conn)
}

fn done(events: &[PgEvent]) -> Vec<&PgExchange> {
    events
        .iter()
        .filter_map(|e| match e {
            PgEvent::Done { exchange, .. } => Some(exchange),
            _ => None,
        })
        .collect()
}

fn abandoned(events: &[PgEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            PgEvent::Abandoned { seq } => Some(*seq),
            _ => None,
        })
        .collect()
}

fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![ty];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstrs(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(p);
        v.push(0);
    }
    v
}

fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', &cstrs(&[sql.as_bytes()]))
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = cstrs(&[name.as_bytes(), sql.as_bytes()]);
    body.extend_from_slice(&0i16.to_be_bytes());
    msg(b'P', &body)
}

fn bind(stmt: &str, params: &[&[u8]]) -> Vec<u8> {
    let mut body = cstrs(&[b"", stmt.as_bytes()]);
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        body.extend_from_slice(&(p.len() as i32).to_be_bytes());
        body.extend_from_slice(p);
    }
    body.extend_from_slice(&0i16.to_be_bytes());
    msg(b'B', &body)
}

fn execute() -> Vec<u8> {
    msg(b'E', &[0, 0, 0, 0, 0])
}

fn sync() -> Vec<u8> {
    msg(b'S', &[])
}

fn ready() -> Vec<u8> {
    msg(b'Z', b"I")
}

fn complete(tag: &str) -> Vec<u8> {
    msg(b'C', &cstrs(&[tag.as_bytes()]))
}

fn row_description(cols: &[&str]) -> Vec<u8> {
    let mut body = (cols.len() as i16).to_be_bytes().to_vec();
    for c in cols {
        body.extend_from_slice(&cstrs(&[c.as_bytes()]));
        body.extend_from_slice(&[0; 18]);
    }
    msg(b'T', &body)
}

fn data_row(vals: &[&[u8]]) -> Vec<u8> {
    let mut body = (vals.len() as i16).to_be_bytes().to_vec();
    for v in vals {
        body.extend_from_slice(&(v.len() as i32).to_be_bytes());
        body.extend_from_slice(v);
    }
    msg(b'D', &body)
}

fn error(code: &str, text: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (f, v) in [(b'S', "ERROR"), (b'V', "ERROR"), (b'C', code), (b'M', text)] {
        body.push(f);
        body.extend_from_slice(&cstrs(&[v.as_bytes()]));
    }
    body.push(0);
    msg(b'E', &body)
}

fn startup(user: &str, db: Option<&str>) -> Vec<u8> {
    let mut body = PROTOCOL_3.to_be_bytes().to_vec();
    body.extend_from_slice(&cstrs(&[b"user", user.as_bytes()]));
    if let Some(db) = db {
        body.extend_from_slice(&cstrs(&[b"database", db.as_bytes()]));
    }
    body.push(0);
    let mut m = (body.len() as u32 + 4).to_be_bytes().to_vec();
    m.extend_from_slice(&body);
    m
}

/// AuthenticationOk, BackendKeyData, ReadyForQuery.
fn startup_reply() -> Vec<u8> {
    [
        msg(b'R', &[0, 0, 0, 0]),
        msg(b'K', &[0, 0, 0, 7, 1, 2, 3, 4]),
        ready(),
    ]
    .concat()
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

// Recorded with a loopback proxy between the clients and PostgreSQL 15.
// psql, sslmode=prefer against a server without TLS: SSLRequest refused.
const PSQL_SIMPLE: &[(Direction, &[u8])] = &[
    (Out, b"\x00\x00\x00\x08\x04\xd2\x16/"),
    (In, b"N"),
    (Out, b"\x00\x00\x006\x00\x03\x00\x00user\x00app\x00database\x00shop\x00application_name\x00psql\x00\x00"),
    (In, b"R\x00\x00\x00\x08\x00\x00\x00\x00S\x00\x00\x00\x1aapplication_name\x00psql\x00S\x00\x00\x00\x19client_encoding\x00UTF8\x00S\x00\x00\x00\x17DateStyle\x00ISO, MDY\x00S\x00\x00\x00&default_transaction_read_only\x00off\x00S\x00\x00\x00\x17in_hot_standby\x00off\x00S\x00\x00\x00\x19integer_datetimes\x00on\x00S\x00\x00\x00\x1bIntervalStyle\x00postgres\x00S\x00\x00\x00\x14is_superuser\x00on\x00S\x00\x00\x00\x19server_encoding\x00UTF8\x00S\x00\x00\x002server_version\x0015.18 (Debian 15.18-0+deb12u1)\x00S\x00\x00\x00\x1esession_authorization\x00app\x00S\x00\x00\x00#standard_conforming_strings\x00on\x00S\x00\x00\x00\x15TimeZone\x00Etc/UTC\x00K\x00\x00\x00\x0c\x00\x00\x0e\x01\xf1\xcb\x132Z\x00\x00\x00\x05I"),
    (Out, b"Q\x00\x00\x001select id, name from items where price > 1.0\x00"),
    (In, b"T\x00\x00\x002\x00\x02id\x00\x00\x00@\x01\x00\x01\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00name\x00\x00\x00@\x01\x00\x02\x00\x00\x00\x19\xff\xff\xff\xff\xff\xff\x00\x00D\x00\x00\x00\x14\x00\x02\x00\x00\x00\x011\x00\x00\x00\x05appleD\x00\x00\x00\x13\x00\x02\x00\x00\x00\x012\x00\x00\x00\x04pearC\x00\x00\x00\rSELECT 2\x00Z\x00\x00\x00\x05I"),
    (Out, b"X\x00\x00\x00\x04"),
];
// psql running a statement on a missing table.
const PSQL_ERROR: &[(Direction, &[u8])] = &[
    (Out, b"\x00\x00\x00\x08\x04\xd2\x16/"),
    (In, b"N"),
    (Out, b"\x00\x00\x006\x00\x03\x00\x00user\x00app\x00database\x00shop\x00application_name\x00psql\x00\x00"),
    (In, b"R\x00\x00\x00\x08\x00\x00\x00\x00S\x00\x00\x00\x1aapplication_name\x00psql\x00S\x00\x00\x00\x19client_encoding\x00UTF8\x00S\x00\x00\x00\x17DateStyle\x00ISO, MDY\x00S\x00\x00\x00&default_transaction_read_only\x00off\x00S\x00\x00\x00\x17in_hot_standby\x00off\x00S\x00\x00\x00\x19integer_datetimes\x00on\x00S\x00\x00\x00\x1bIntervalStyle\x00postgres\x00S\x00\x00\x00\x14is_superuser\x00on\x00S\x00\x00\x00\x19server_encoding\x00UTF8\x00S\x00\x00\x002server_version\x0015.18 (Debian 15.18-0+deb12u1)\x00S\x00\x00\x00\x1esession_authorization\x00app\x00S\x00\x00\x00#standard_conforming_strings\x00on\x00S\x00\x00\x00\x15TimeZone\x00Etc/UTC\x00K\x00\x00\x00\x0c\x00\x00\x0e-\x8f\x8bW\xa5Z\x00\x00\x00\x05I"),
    (Out, b"Q\x00\x00\x00 select * from missing_table\x00"),
    (In, b"E\x00\x00\x00pSERROR\x00VERROR\x00C42P01\x00Mrelation \"missing_table\" does not exist\x00P15\x00Fparse_relation.c\x00L1392\x00RparserOpenTable\x00\x00"),
    (In, b"Z\x00\x00\x00\x05I"),
    (Out, b"X\x00\x00\x00\x04"),
];
// psycopg 3: BEGIN, a parameterised SELECT (Parse/Bind/Describe/Execute/Sync),
// a pipeline of two statements behind one Sync, COMMIT.
const PSYCOPG: &[(Direction, &[u8])] = &[
    (Out, b"\x00\x00\x00 \x00\x03\x00\x00user\x00app\x00database\x00shop\x00\x00"),
    (In, b"R\x00\x00\x00\x08\x00\x00\x00\x00S\x00\x00\x00\x16application_name\x00\x00S\x00\x00\x00\x19client_encoding\x00UTF8\x00S\x00\x00\x00\x17DateStyle\x00ISO, MDY\x00S\x00\x00\x00&default_transaction_read_only\x00off\x00S\x00\x00\x00\x17in_hot_standby\x00off\x00S\x00\x00\x00\x19integer_datetimes\x00on\x00S\x00\x00\x00\x1bIntervalStyle\x00postgres\x00S\x00\x00\x00\x14is_superuser\x00on\x00S\x00\x00\x00\x19server_encoding\x00UTF8\x00S\x00\x00\x002server_version\x0015.18 (Debian 15.18-0+deb12u1)\x00S\x00\x00\x00\x1esession_authorization\x00app\x00S\x00\x00\x00#standard_conforming_strings\x00on\x00S\x00\x00\x00\x15TimeZone\x00Etc/UTC\x00K\x00\x00\x00\x0c\x00\x00\x0f\t\xc7k\xf6BZ\x00\x00\x00\x05I"),
    (Out, b"Q\x00\x00\x00\nBEGIN\x00"),
    (In, b"C\x00\x00\x00\nBEGIN\x00Z\x00\x00\x00\x05T"),
    (Out, b"P\x00\x00\x00C\x00select name from items where id = $1 and name <> $2\x00\x00\x02\x00\x00\x00\x15\x00\x00\x00\x00B\x00\x00\x00\"\x00\x00\x00\x02\x00\x01\x00\x00\x00\x02\x00\x00\x00\x02\x00\x01\x00\x00\x00\x06secret\x00\x01\x00\x00D\x00\x00\x00\x06P\x00E\x00\x00\x00\t\x00\x00\x00\x00\x00S\x00\x00\x00\x04"),
    (In, b"1\x00\x00\x00\x042\x00\x00\x00\x04T\x00\x00\x00\x1d\x00\x01name\x00\x00\x00@\x01\x00\x02\x00\x00\x00\x19\xff\xff\xff\xff\xff\xff\x00\x00D\x00\x00\x00\x0f\x00\x01\x00\x00\x00\x05appleC\x00\x00\x00\rSELECT 1\x00Z\x00\x00\x00\x05T"),
    (Out, b"P\x00\x00\x00A\x00update items set price = price + $1 where id = $2\x00\x00\x02\x00\x00\x00\x15\x00\x00\x00\x15B\x00\x00\x00\x1e\x00\x00\x00\x02\x00\x01\x00\x01\x00\x02\x00\x00\x00\x02\x00\x01\x00\x00\x00\x02\x00\x02\x00\x01\x00\x00D\x00\x00\x00\x06P\x00E\x00\x00\x00\t\x00\x00\x00\x00\x00"),
    (Out, b"P\x00\x00\x00\"\x00select count(*) from items\x00\x00\x00B\x00\x00\x00\x0e\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00D\x00\x00\x00\x06P\x00E\x00\x00\x00\t\x00\x00\x00\x00\x00"),
    (Out, b"S\x00\x00\x00\x04"),
    (Out, b"H\x00\x00\x00\x04"),
    (In, b"1\x00\x00\x00\x042\x00\x00\x00\x04n\x00\x00\x00\x04C\x00\x00\x00\rUPDATE 1\x001\x00\x00\x00\x042\x00\x00\x00\x04T\x00\x00\x00\x1e\x00\x01count\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x14\x00\x08\xff\xff\xff\xff\x00\x00D\x00\x00\x00\x0b\x00\x01\x00\x00\x00\x014C\x00\x00\x00\rSELECT 1\x00Z\x00\x00\x00\x05T"),
    (Out, b"Q\x00\x00\x00\x0bCOMMIT\x00"),
    (In, b"C\x00\x00\x00\x0bCOMMIT\x00Z\x00\x00\x00\x05I"),
    (Out, b"X\x00\x00\x00\x04"),
];
// pgbench -M prepared -S: Parse+Sync once, then Bind/Describe/Execute/Sync.
const PGBENCH_PREPARED: &[(Direction, &[u8])] = &[
    (Out, b"\x00\x00\x00\x08\x04\xd2\x16/"),
    (In, b"N"),
    (Out, b"\x00\x00\x009\x00\x03\x00\x00user\x00app\x00database\x00shop\x00application_name\x00pgbench\x00\x00"),
    (In, b"R\x00\x00\x00\x08\x00\x00\x00\x00S\x00\x00\x00\x1dapplication_name\x00pgbench\x00S\x00\x00\x00\x19client_encoding\x00UTF8\x00S\x00\x00\x00\x17DateStyle\x00ISO, MDY\x00S\x00\x00\x00&default_transaction_read_only\x00off\x00S\x00\x00\x00\x17in_hot_standby\x00off\x00S\x00\x00\x00\x19integer_datetimes\x00on\x00S\x00\x00\x00\x1bIntervalStyle\x00postgres\x00S\x00\x00\x00\x14is_superuser\x00on\x00S\x00\x00\x00\x19server_encoding\x00UTF8\x00S\x00\x00\x002server_version\x0015.18 (Debian 15.18-0+deb12u1)\x00S\x00\x00\x00\x1esession_authorization\x00app\x00S\x00\x00\x00#standard_conforming_strings\x00on\x00S\x00\x00\x00\x15TimeZone\x00Etc/UTC\x00K\x00\x00\x00\x0c\x00\x00\x10\x18Mn5\x06Z\x00\x00\x00\x05I"),
    (Out, b"P\x00\x00\x00@P_0\x00SELECT abalance FROM pgbench_accounts WHERE aid = $1;\x00\x00\x00S\x00\x00\x00\x04"),
    (In, b"1\x00\x00\x00\x04Z\x00\x00\x00\x05I"),
    (Out, b"B\x00\x00\x00\x1a\x00P_0\x00\x00\x00\x00\x01\x00\x00\x00\x0524528\x00\x01\x00\x00D\x00\x00\x00\x06P\x00E\x00\x00\x00\t\x00\x00\x00\x00\x00S\x00\x00\x00\x04"),
    (In, b"2\x00\x00\x00\x04T\x00\x00\x00!\x00\x01abalance\x00\x00\x00@\x0e\x00\x03\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00D\x00\x00\x00\x0b\x00\x01\x00\x00\x00\x010C\x00\x00\x00\rSELECT 1\x00Z\x00\x00\x00\x05I"),
    (Out, b"B\x00\x00\x00\x1a\x00P_0\x00\x00\x00\x00\x01\x00\x00\x00\x0593803\x00\x01\x00\x00D\x00\x00\x00\x06P\x00E\x00\x00\x00\t\x00\x00\x00\x00\x00S\x00\x00\x00\x04"),
    (In, b"2\x00\x00\x00\x04T\x00\x00\x00!\x00\x01abalance\x00\x00\x00@\x0e\x00\x03\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00D\x00\x00\x00\x0b\x00\x01\x00\x00\x00\x010C\x00\x00\x00\rSELECT 1\x00Z\x00\x00\x00\x05I"),
    (Out, b"X\x00\x00\x00\x04"),
];
// psql \copy items from a file: COPY FROM STDIN.
const PSQL_COPY_IN: &[(Direction, &[u8])] = &[
    (Out, b"\x00\x00\x00\x08\x04\xd2\x16/"),
    (In, b"N"),
    (Out, b"\x00\x00\x006\x00\x03\x00\x00user\x00app\x00database\x00shop\x00application_name\x00psql\x00\x00"),
    (In, b"R\x00\x00\x00\x08\x00\x00\x00\x00S\x00\x00\x00\x1aapplication_name\x00psql\x00S\x00\x00\x00\x19client_encoding\x00UTF8\x00S\x00\x00\x00\x17DateStyle\x00ISO, MDY\x00S\x00\x00\x00&default_transaction_read_only\x00off\x00S\x00\x00\x00\x17in_hot_standby\x00off\x00S\x00\x00\x00\x19integer_datetimes\x00on\x00S\x00\x00\x00\x1bIntervalStyle\x00postgres\x00S\x00\x00\x00\x14is_superuser\x00on\x00S\x00\x00\x00\x19server_encoding\x00UTF8\x00S\x00\x00\x002server_version\x0015.18 (Debian 15.18-0+deb12u1)\x00S\x00\x00\x00\x1esession_authorization\x00app\x00S\x00\x00\x00#standard_conforming_strings\x00on\x00S\x00\x00\x00\x15TimeZone\x00Etc/UTC\x00K\x00\x00\x00\x0c\x00\x00\x0e\x85RnirZ\x00\x00\x00\x05I"),
    (Out, b"Q\x00\x00\x00\x1cCOPY  items FROM STDIN \x00"),
    (In, b"G\x00\x00\x00\r\x00\x00\x03\x00\x00\x00\x00\x00\x00"),
    (Out, b"d\x00\x00\x00\x1710\tkiwi\t3\n11\tfig\t4\nc\x00\x00\x00\x04"),
    (In, b"C\x00\x00\x00\x0bCOPY 2\x00Z\x00\x00\x00\x05I"),
    (Out, b"X\x00\x00\x00\x04"),
];
// psql COPY items TO STDOUT.
const PSQL_COPY_OUT: &[(Direction, &[u8])] = &[
    (Out, b"\x00\x00\x00\x08\x04\xd2\x16/"),
    (In, b"N"),
    (Out, b"\x00\x00\x006\x00\x03\x00\x00user\x00app\x00database\x00shop\x00application_name\x00psql\x00\x00"),
    (In, b"R\x00\x00\x00\x08\x00\x00\x00\x00S\x00\x00\x00\x1aapplication_name\x00psql\x00S\x00\x00\x00\x19client_encoding\x00UTF8\x00S\x00\x00\x00\x17DateStyle\x00ISO, MDY\x00S\x00\x00\x00&default_transaction_read_only\x00off\x00S\x00\x00\x00\x17in_hot_standby\x00off\x00S\x00\x00\x00\x19integer_datetimes\x00on\x00S\x00\x00\x00\x1bIntervalStyle\x00postgres\x00S\x00\x00\x00\x14is_superuser\x00on\x00S\x00\x00\x00\x19server_encoding\x00UTF8\x00S\x00\x00\x002server_version\x0015.18 (Debian 15.18-0+deb12u1)\x00S\x00\x00\x00\x1esession_authorization\x00app\x00S\x00\x00\x00#standard_conforming_strings\x00on\x00S\x00\x00\x00\x15TimeZone\x00Etc/UTC\x00K\x00\x00\x00\x0c\x00\x00\x0eYo\x9b\xf5\xc5Z\x00\x00\x00\x05I"),
    (Out, b"Q\x00\x00\x00\x19COPY items TO STDOUT\x00"),
    (In, b"H\x00\x00\x00\r\x00\x00\x03\x00\x00\x00\x00\x00\x00d\x00\x00\x00\x101\tapple\t1.5\nd\x00\x00\x00\x102\tpear\t2.25\nc\x00\x00\x00\x04C\x00\x00\x00\x0bCOPY 2\x00Z\x00\x00\x00\x05I"),
    (Out, b"X\x00\x00\x00\x04"),
];

const RECORDED: &[&[(Direction, &[u8])]] = &[
    PSQL_SIMPLE,
    PSQL_ERROR,
    PSYCOPG,
    PGBENCH_PREPARED,
    PSQL_COPY_IN,
    PSQL_COPY_OUT,
];

#[test]
fn psql_simple_query_after_ssl_refusal() {
    let trs = transfers(PSQL_SIMPLE);
    let (events, conn) = run(&trs);
    assert_eq!(conn.requests_direction(), Some(Out));
    assert_eq!(conn.errors(), ParseErrors::default());
    let query = PgQuery {
        text: "select id, name from items where price > ?".into(),
        operation: Some("SELECT".into()),
        namespace: Some("shop".into()),
        prepared: false,
    };
    assert_eq!(
        events,
        vec![
            PgEvent::Start {
                seq: 0,
                query: query.clone(),
                start: t(5),
            },
            PgEvent::Done {
                seq: 0,
                exchange: PgExchange {
                    seq: 0,
                    query,
                    request_start: t(5),
                    request_end: t(5),
                    response_start: t(6),
                    response_end: t(6),
                    error: None,
                    rows: Some(2),
                },
            },
        ]
    );
}

#[test]
fn failing_statement_reports_sqlstate() {
    let (events, conn) = run(&transfers(PSQL_ERROR));
    let x = done(&events);
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].query.text, "select * from missing_table");
    assert_eq!(
        x[0].error,
        Some(PgError {
            code: "42P01".into(),
            severity: "ERROR".into(),
            message: "relation \"missing_table\" does not exist".into(),
        })
    );
    assert_eq!(x[0].rows, None);
    assert_eq!((x[0].response_start, x[0].response_end), (t(6), t(7)));
    assert_eq!(conn.errors(), ParseErrors::default());
}

#[test]
fn psycopg_extended_queries_and_pipeline() {
    let (events, conn) = run(&transfers(PSYCOPG));
    assert_eq!(conn.errors(), ParseErrors::default());
    let x = done(&events);
    let summary: Vec<_> = x
        .iter()
        .map(|x| (x.query.text.as_str(), x.query.prepared, x.rows))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("BEGIN", false, None),
            (
                "select name from items where id = $1 and name <> $2",
                true,
                Some(1)
            ),
            // Two statements behind one Sync are one exchange.
            (
                "update items set price = price + $1 where id = $2",
                true,
                Some(1)
            ),
            ("COMMIT", false, None),
        ]
    );
    assert_eq!(x[2].query.operation.as_deref(), Some("UPDATE"));
    // The pipeline was written in four transfers; the exchange spans them.
    assert_eq!((x[2].request_start, x[2].request_end), (t(7), t(9)));
    assert!(
        x.iter()
            .all(|x| x.query.namespace.as_deref() == Some("shop"))
    );
    // Bound parameter values never reach an event.
    assert!(!format!("{events:?}").contains("secret"));
}

#[test]
fn pgbench_prepared_statements_are_recalled_by_name() {
    let (events, conn) = run(&transfers(PGBENCH_PREPARED));
    assert_eq!(conn.errors(), ParseErrors::default());
    let x = done(&events);
    assert_eq!(x.len(), 3, "{events:#?}");
    for x in &x {
        assert_eq!(
            x.query.text,
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"
        );
        assert_eq!(x.query.operation.as_deref(), Some("SELECT"));
        assert!(x.query.prepared);
    }
    assert_eq!(x[0].rows, None);
    assert_eq!(x[1].rows, Some(1));
    assert_eq!(x[2].rows, Some(1));
}

#[test]
fn copy_flows_make_one_exchange() {
    let (events, conn) = run(&transfers(PSQL_COPY_IN));
    assert_eq!(conn.errors(), ParseErrors::default());
    let x = done(&events);
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].query.operation.as_deref(), Some("COPY"));
    assert_eq!(x[0].rows, Some(2));
    // The request goes on until the CopyData and CopyDone transfer.
    assert_eq!((x[0].request_start, x[0].request_end), (t(5), t(7)));
    assert_eq!((x[0].response_start, x[0].response_end), (t(6), t(8)));

    let (events, conn) = run(&transfers(PSQL_COPY_OUT));
    assert_eq!(conn.errors(), ParseErrors::default());
    let x = done(&events);
    assert_eq!(x.len(), 1);
    assert_eq!(
        (x[0].query.text.as_str(), x[0].rows),
        ("COPY items TO STDOUT", Some(2))
    );
}

#[test]
fn every_split_of_every_transfer_gives_the_same_events() {
    for stream in RECORDED {
        let trs = transfers(stream);
        let (whole, _) = run(&trs);
        for k in 0..trs.len() {
            for at in 1..trs[k].data.len() {
                let (events, conn) = run(&split_at(&trs, k, at));
                assert_eq!(events, whole, "transfer {k} split at {at}");
                assert_eq!(conn.errors(), ParseErrors::default());
            }
        }
    }
}

#[test]
fn random_splits_give_the_same_events() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let handmade = pipelined_stream();
    let mut streams: Vec<Vec<Tr>> = RECORDED.iter().map(|s| transfers(s)).collect();
    streams.push(handmade);
    for trs in &streams {
        let (whole, _) = run(trs);
        assert!(!done(&whole).is_empty());
        for round in 0..200 {
            let (events, _) = run(&random_split(trs, &mut rng));
            assert_eq!(events, whole, "round {round}");
        }
    }
}

fn pipelined_stream() -> Vec<Tr> {
    let requests = cat(&[
        query("SELECT 1"),
        query("UPDATE t SET a = 'x' WHERE id = 7"),
        query("DELETE FROM t"),
    ]);
    let responses = cat(&[
        row_description(&["?column?"]),
        data_row(&[b"1"]),
        complete("SELECT 1"),
        ready(),
        complete("UPDATE 4"),
        ready(),
        error("42501", "permission denied for table t"),
        ready(),
    ]);
    transfers(&[
        (Out, &startup("app", Some("db"))),
        (In, &startup_reply()),
        (Out, &requests),
        (In, &responses),
    ])
}

#[test]
fn pipelined_queries_pair_in_order() {
    let (events, conn) = run(&pipelined_stream());
    assert_eq!(conn.errors(), ParseErrors::default());
    let x = done(&events);
    let summary: Vec<_> = x
        .iter()
        .map(|x| {
            (
                x.seq,
                x.query.text.as_str(),
                x.rows,
                x.error.as_ref().map(|e| e.code.as_str()),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, "SELECT ?", Some(1), None),
            (1, "UPDATE t SET a = ? WHERE id = ?", Some(4), None),
            (2, "DELETE FROM t", None, Some("42501")),
        ]
    );
    assert!(
        x.iter()
            .all(|x| x.request_start == t(3) && x.response_end == t(4))
    );
}

#[test]
fn extended_batch_with_error_and_named_statements() {
    let trs = transfers(&[
        (Out, &startup("app", None)),
        (In, &startup_reply()),
        (
            Out,
            &cat(&[parse("s1", "INSERT INTO t VALUES ($1)"), sync()]),
        ),
        (In, &cat(&[msg(b'1', &[]), ready()])),
        (Out, &cat(&[bind("s1", &[b"42"]), execute(), sync()])),
        (
            In,
            &cat(&[
                msg(b'2', &[]),
                error("23505", "duplicate key value violates unique constraint"),
                ready(),
            ]),
        ),
        (Out, &cat(&[bind("unknown", &[]), execute(), sync()])),
        (In, &cat(&[msg(b'2', &[]), complete("INSERT 0 1"), ready()])),
        // A bare Sync gets a ReadyForQuery and makes no span.
        (Out, &sync()),
        (In, &ready()),
        (Out, &query("select 1")),
        (In, &cat(&[complete("SELECT 1"), ready()])),
    ]);
    let (events, conn) = run(&trs);
    assert_eq!(conn.errors(), ParseErrors::default());
    let x = done(&events);
    assert_eq!(x.len(), 4);
    // Without a database parameter the server uses the user's name.
    assert_eq!(x[0].query.namespace.as_deref(), Some("app"));
    assert_eq!(x[1].query.text, "INSERT INTO t VALUES ($1)");
    assert_eq!(x[1].error.as_ref().map(|e| e.code.as_str()), Some("23505"));
    // A statement prepared before seam saw it has no text.
    assert_eq!(
        (x[2].query.text.as_str(), x[2].query.operation.as_deref()),
        ("", None)
    );
    assert_eq!(x[2].rows, Some(1));
    assert_eq!(
        (x[3].query.text.as_str(), x[3].request_start),
        ("select ?", t(11))
    );
}

#[test]
fn results_beyond_the_capture_are_skipped_by_count() {
    let big = vec![b'x'; 10_000];
    let head = cat(&[row_description(&["v"]), data_row(&[&big])]);
    let tail = cat(&[complete("SELECT 1"), ready()]);
    let mut conn = PgConn::new();
    let mut out = Vec::new();
    conn.feed(Out, &query("select repeat('x', 10000)"), 0, t(1), &mut out);
    // Only 4096 bytes of the read were captured; it ends with the row.
    conn.feed(In, &head[..4096], head.len() as u64, t(2), &mut out);
    conn.feed(In, &tail, tail.len() as u64, t(3), &mut out);
    let x = done(&out);
    assert_eq!(x.len(), 1);
    assert_eq!(
        (x[0].rows, x[0].response_start, x[0].response_end),
        (Some(1), t(2), t(3))
    );
    assert_eq!(x[0].query.text, "select repeat(?, ?)");
    assert_eq!(conn.errors(), ParseErrors::default());
}

#[test]
fn header_beyond_the_capture_abandons_then_resyncs() {
    let big = vec![b'x'; 10_000];
    let response = cat(&[
        row_description(&["v"]),
        data_row(&[&big]),
        complete("SELECT 1"),
        ready(),
    ]);
    let rest = cat(&[data_row(&[b"7"]), complete("SELECT 2"), ready()]);
    let mut conn = PgConn::new();
    let mut out = Vec::new();
    conn.feed(Out, &query("select v from big"), 0, t(1), &mut out);
    // CommandComplete and ReadyForQuery fall past the capture.
    conn.feed(In, &response[..4096], response.len() as u64, t(2), &mut out);
    assert_eq!(abandoned(&out), vec![0]);
    // A read that begins inside a result is no place to resume.
    conn.feed(In, &rest, rest.len() as u64, t(3), &mut out);
    conn.feed(Out, &query("select 2"), 0, t(4), &mut out);
    conn.feed(
        In,
        &cat(&[
            row_description(&["n"]),
            data_row(&[b"2"]),
            complete("SELECT 1"),
            ready(),
        ]),
        0,
        t(5),
        &mut out,
    );
    let x = done(&out);
    assert_eq!(x.len(), 1);
    assert_eq!(
        (x[0].seq, x[0].query.text.as_str(), x[0].rows),
        (1, "select ?", Some(1))
    );
    assert_eq!(
        conn.errors(),
        ParseErrors {
            desyncs: 1,
            orphan_responses: 0
        }
    );
}

#[test]
fn truncated_query_text_keeps_a_sanitized_prefix() {
    let sql = format!(
        "INSERT INTO logs (msg) VALUES ('{}')",
        "secret ".repeat(2000)
    );
    let q = query(&sql);
    let mut conn = PgConn::new();
    let mut out = Vec::new();
    conn.feed(Out, &q[..4096], q.len() as u64, t(1), &mut out);
    conn.feed(
        In,
        &cat(&[complete("INSERT 0 1"), ready()]),
        0,
        t(2),
        &mut out,
    );
    let x = done(&out);
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].query.text, "INSERT INTO logs (msg) VALUES (?");
    assert_eq!(x[0].query.operation.as_deref(), Some("INSERT"));
    assert!(!format!("{out:?}").contains("secret"));
}

#[test]
fn joining_mid_stream() {
    let mut conn = PgConn::new();
    let mut out = Vec::new();
    // The tail of a result, then a whole response: neither was asked for.
    conn.feed(
        In,
        b"\x00\x01\x00\x00\x00\x03abcD\x00\x00",
        0,
        t(1),
        &mut out,
    );
    assert_eq!(conn.requests_direction(), None);
    conn.feed(
        In,
        &cat(&[complete("SELECT 1"), ready()]),
        0,
        t(2),
        &mut out,
    );
    // Still unknown: CommandComplete is a frontend Close-like type too.
    assert_eq!(conn.requests_direction(), None);
    conn.feed(
        In,
        &cat(&[
            row_description(&["a"]),
            data_row(&[b"1"]),
            complete("SELECT 1"),
            ready(),
        ]),
        0,
        t(3),
        &mut out,
    );
    assert_eq!(conn.requests_direction(), Some(Out));
    assert!(out.is_empty());
    assert_eq!(conn.errors().orphan_responses, 1);
    conn.feed(
        Out,
        &cat(&[bind("S_1", &[b"5"]), execute(), sync()]),
        0,
        t(4),
        &mut out,
    );
    conn.feed(
        In,
        &cat(&[
            msg(b'2', &[]),
            data_row(&[b"1"]),
            complete("SELECT 1"),
            ready(),
        ]),
        0,
        t(5),
        &mut out,
    );
    let x = done(&out);
    assert_eq!(x.len(), 1);
    assert_eq!(
        (
            x[0].query.text.as_str(),
            x[0].query.prepared,
            x[0].query.namespace.as_deref()
        ),
        ("", true, None)
    );
}

#[test]
fn server_side_view_takes_requests_from_ingress() {
    let trs = transfers(PSQL_SIMPLE);
    let flipped: Vec<Tr> = trs
        .iter()
        .map(|tr| Tr {
            dir: tr.dir.opposite(),
            ..tr.clone()
        })
        .collect();
    let (events, conn) = run(&flipped);
    assert_eq!(conn.requests_direction(), Some(In));
    let (whole, _) = run(&trs);
    assert_eq!(events, whole);
}

#[test]
fn lost_events() {
    let mut conn = PgConn::new();
    let mut out = Vec::new();
    conn.feed(Out, &query("select * from a"), 0, t(1), &mut out);
    let row = data_row(&[&[b'r'; 300]]);
    let response = cat(&[
        row_description(&["v"]),
        row.clone(),
        row.clone(),
        row.clone(),
        complete("SELECT 3"),
        ready(),
    ]);
    // The read carrying the middle of the response is lost: the next one
    // begins inside a row.
    conn.feed(In, &response[..200], 0, t(2), &mut out);
    conn.feed(In, &response[700..], 0, t(3), &mut out);
    assert_eq!(abandoned(&out), vec![0]);
    // A lost write: its response is answered to nobody seen.
    conn.feed(
        In,
        &cat(&[complete("SELECT 0"), ready()]),
        0,
        t(5),
        &mut out,
    );
    conn.feed(Out, &query("select 1"), 0, t(6), &mut out);
    conn.feed(
        In,
        &cat(&[complete("SELECT 1"), ready()]),
        0,
        t(7),
        &mut out,
    );
    let x = done(&out);
    assert_eq!(x.len(), 1);
    assert_eq!(
        (x[0].seq, x[0].request_start, x[0].response_end),
        (1, t(6), t(7))
    );
    assert_eq!(
        conn.errors(),
        ParseErrors {
            desyncs: 1,
            orphan_responses: 1
        }
    );
}

#[test]
fn response_older_than_its_request_is_an_orphan() {
    let mut conn = PgConn::new();
    let mut out = Vec::new();
    // Pipelined: the write with the first query was lost, so the first
    // ReadyForQuery is not for the query seen.
    conn.feed(Out, &query("select 2"), 0, t(5), &mut out);
    conn.feed(
        In,
        &cat(&[complete("SELECT 1"), ready()]),
        0,
        t(3),
        &mut out,
    );
    conn.feed(
        In,
        &cat(&[complete("SELECT 1"), ready()]),
        0,
        t(6),
        &mut out,
    );
    assert_eq!(done(&out).len(), 1);
    assert_eq!(done(&out)[0].response_start, t(6));
    assert_eq!(conn.errors().orphan_responses, 1);
}

#[test]
fn ssl_accepted_makes_the_connection_opaque() {
    let mut conn = PgConn::new();
    let mut out = Vec::new();
    conn.feed(Out, PSQL_SIMPLE[0].1, 0, t(1), &mut out);
    conn.feed(In, b"S", 0, t(2), &mut out);
    conn.feed(Out, &[0x16, 3, 1, 0, 0xa5, 1, 0, 0], 0, t(3), &mut out);
    conn.feed(Out, &query("select 1"), 0, t(4), &mut out);
    conn.feed(
        In,
        &cat(&[complete("SELECT 1"), ready()]),
        0,
        t(5),
        &mut out,
    );
    conn.close(&mut out);
    assert!(out.is_empty());
    assert_eq!(conn.errors(), ParseErrors::default());
}

#[test]
fn close_abandons_pending() {
    let mut conn = PgConn::new();
    let mut out = Vec::new();
    conn.feed(
        Out,
        &cat(&[query("select pg_sleep(10)"), query("select 1")]),
        0,
        t(1),
        &mut out,
    );
    conn.close(&mut out);
    assert_eq!(abandoned(&out), vec![0, 1]);
}

#[test]
fn pending_requests_stay_bounded_and_paired() {
    let mut conn = PgConn::new();
    let mut out = Vec::new();
    for i in 0..MAX_PENDING as u64 + 10 {
        conn.feed(Out, &query("select 1"), 0, t(i + 1), &mut out);
    }
    assert!(conn.pending.len() <= MAX_PENDING);
    // The first overflow folds two requests, each later one adds one.
    assert_eq!(abandoned(&out).len(), 11);
    for i in 0..MAX_PENDING as u64 + 10 {
        conn.feed(
            In,
            &cat(&[complete("SELECT 1"), ready()]),
            0,
            t(5000 + i),
            &mut out,
        );
    }
    let x = done(&out);
    assert_eq!(x.len(), MAX_PENDING - 1);
    assert_eq!(x[0].seq, 11);
    assert_eq!(conn.errors().orphan_responses, 0);
}

#[test]
fn pending_texts_stay_bounded() {
    let mut conn = PgConn::new();
    let mut out = Vec::new();
    let long = query(&format!("SELECT {}", "a_column, ".repeat(200)));
    for i in 0..200 {
        conn.feed(Out, &long, 0, t(i + 1), &mut out);
    }
    assert!(conn.pending_bytes <= MAX_PENDING_BYTES);
    let held: usize = conn
        .pending
        .iter()
        .map(|s| match s {
            Slot::Exchange(w) => w.query.text.len(),
            Slot::Silent(_) => 0,
        })
        .sum();
    assert_eq!(held, conn.pending_bytes);
    assert!(!abandoned(&out).is_empty());
    for i in 0..200 {
        conn.feed(
            In,
            &cat(&[complete("SELECT 0"), ready()]),
            0,
            t(1000 + i),
            &mut out,
        );
    }
    assert_eq!(done(&out).len() + abandoned(&out).len(), 200);
    assert_eq!((conn.pending_bytes, conn.errors().orphan_responses), (0, 0));
}

#[test]
fn statement_memory_is_bounded() {
    let mut conn = PgConn::new();
    let mut out = Vec::new();
    for i in 0..MAX_STATEMENTS + 1 {
        conn.feed(
            Out,
            &cat(&[parse(&format!("s{i}"), &format!("select {i}")), sync()]),
            0,
            t(1),
            &mut out,
        );
    }
    assert_eq!(conn.statements.len(), MAX_STATEMENTS);
    assert!(conn.recall(b"s0").is_none());
    assert!(
        conn.recall(format!("s{MAX_STATEMENTS}").as_bytes())
            .is_some()
    );
    // Long statements are bounded by size too.
    let long = format!("SELECT {}", "column_name, ".repeat(150));
    for i in 0..200 {
        conn.feed(
            Out,
            &cat(&[parse(&format!("l{i}"), &long), sync()]),
            0,
            t(2),
            &mut out,
        );
    }
    assert!(conn.statement_bytes <= MAX_STATEMENT_BYTES);
    assert_eq!(
        conn.statement_bytes,
        conn.statements
            .iter()
            .map(|(n, s)| n.len() + s.text.len())
            .sum::<usize>()
    );
    assert!(conn.recall(b"l199").is_some());
}

#[test]
fn detection() {
    assert!(looks_like_startup(PSQL_SIMPLE[0].1));
    assert!(looks_like_startup(PSQL_SIMPLE[2].1));
    assert!(looks_like_startup(&[
        0, 0, 0, 16, 4, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 2
    ]));
    assert!(looks_like_startup(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x30]));
    assert!(!looks_like_startup(&[0, 0, 0, 8, 0, 2, 0, 0]));
    assert!(!looks_like_startup(b"GET / HTTP/1.1\r\n"));
    assert!(looks_like_frontend(&query("select 1")));
    assert!(looks_like_frontend(&query("  /* app */ (SELECT 1)")));
    assert!(looks_like_frontend(
        &query("WITH x AS (SELECT 1) SELECT * FROM x")[..12]
    ));
    assert!(looks_like_frontend(PSYCOPG[4].1));
    assert!(looks_like_frontend(PGBENCH_PREPARED[4].1));
    assert!(looks_like_frontend(PGBENCH_PREPARED[6].1));
    assert!(!looks_like_frontend(&query("hello world")));
    assert!(!looks_like_frontend(&query("SELECT \x01\x02")));
    assert!(!looks_like_frontend(&query("SEL")[..7]));
    assert!(!looks_like_frontend(PSQL_ERROR[5].1));
    assert!(!looks_like_frontend(&PSQL_ERROR[5].1[..20]));
    assert_eq!(classify(&PSQL_ERROR[5].1[..20]), Class::No);
    assert!(looks_like_frontend(&execute()));
    assert!(!looks_like_frontend(PSQL_SIMPLE[5].1));
    assert!(!looks_like_frontend(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert!(!looks_like_frontend(b"PUT / HTTP/1.1\r\n"));
    assert!(!looks_like_frontend(b"Q\x00\x00\x00"));
    assert!(!looks_like_frontend(&[0x16, 3, 1, 0, 0xa5]));
    assert!(!looks_like_frontend(b""));
}

#[test]
fn sanitizer() {
    let cases = [
        (
            "SELECT * FROM t WHERE a = 'it''s' AND b = 42",
            "SELECT * FROM t WHERE a = ? AND b = ?",
        ),
        (
            "select e'a\\'b' , E'\\\\', x'1F', b'01', n'x', U&'d\\0061t'",
            "select ? , ?, ?, ?, ?, ?",
        ),
        ("SELECT $$a 'b' $c$$, $fn$ x $$ y $fn$", "SELECT ?, ?"),
        (
            "SELECT t1.c2, \"col 3\", \"it\"\"s 4\" FROM t1",
            "SELECT t1.c2, \"col 3\", \"it\"\"s 4\" FROM t1",
        ),
        ("SELECT 1.5e-3, .5, 0x1F, 1_000, 3.", "SELECT ?, ?, ?, ?, ?"),
        ("SELECT a$1, $1, $12::int", "SELECT a$1, $1, $12::int"),
        (
            "SELECT 1 -- secret 2\n, 3 /* x /* 4 */ 5 */ FROM t",
            "SELECT ? \n, ? FROM t",
        ),
        ("SELECT true, NULL, -7", "SELECT true, NULL, -?"),
        ("SELECT 'unterminated secret", "SELECT ?"),
        ("SELECT $q$ cut", "SELECT ?"),
        ("SELECT 'é', 'ü' FROM café", "SELECT ?, ? FROM café"),
        ("", ""),
    ];
    for (raw, want) in cases {
        assert_eq!(sanitize(raw.as_bytes()), want, "{raw}");
    }
    let long = format!("SELECT {}", "abc, ".repeat(1000));
    assert_eq!(sanitize(long.as_bytes()).chars().count(), MAX_QUERY_CHARS);
    // A multi-byte character cut by the capture is dropped.
    assert_eq!(sanitize(&"SELECT é".as_bytes()[..8]), "SELECT");
    assert_eq!(sanitize(b"SELECT \xff"), "SELECT \u{fffd}");
}

#[test]
fn operations() {
    let cases = [
        ("select 1", Some("SELECT")),
        ("  (SELECT 1) UNION (SELECT 2)", Some("SELECT")),
        (
            "WITH a AS (SELECT 1), b AS (UPDATE t SET x = ? RETURNING *) INSERT INTO t SELECT * FROM a",
            Some("INSERT"),
        ),
        (
            "WITH RECURSIVE r(n) AS (VALUES (?) UNION ALL SELECT n+? FROM r) SELECT * FROM r",
            Some("SELECT"),
        ),
        ("WITH a AS (SELECT", Some("WITH")),
        ("begin", Some("BEGIN")),
        ("create table t (a int)", Some("CREATE")),
        ("", None),
        ("?", None),
    ];
    for (text, want) in cases {
        assert_eq!(operation(text).as_deref(), want, "{text}");
    }
}

#[test]
fn row_counts_and_errors() {
    assert_eq!(parse_rows(b"SELECT 3\0"), Some(3));
    assert_eq!(parse_rows(b"INSERT 0 1\0"), Some(1));
    assert_eq!(parse_rows(b"UPDATE 12\0"), Some(12));
    assert_eq!(parse_rows(b"CREATE TABLE\0"), None);
    assert_eq!(parse_rows(b"BEGIN\0"), None);
    let e = parse_error(&error("42P01", "nope")[5..]).unwrap();
    assert_eq!(
        (e.code.as_str(), e.severity.as_str(), e.message.as_str()),
        ("42P01", "ERROR", "nope")
    );
    assert_eq!(parse_error(b"SFATAL\0\0").map(|e| e.code), None);
}

#[test]
fn junk_never_panics_and_events_are_consistent() {
    let mut rng = Rng(42);
    let mut corpus: Vec<u8> = RECORDED
        .iter()
        .flat_map(|s| s.iter().flat_map(|(_, d)| d.to_vec()))
        .collect();
    corpus.extend(cat(&pipelined_stream()
        .iter()
        .map(|t| t.data.clone())
        .collect::<Vec<_>>()));
    for round in 0..2000 {
        let mut conn = PgConn::new();
        let mut out = Vec::new();
        for i in 0..20 {
            let (dir, data, len) = junk_transfer(&mut rng, &corpus, 300);
            conn.feed(dir, &data, len, t(round * 100 + i), &mut out);
        }
        conn.close(&mut out);
        assert_paired(&out, |e| match e {
            PgEvent::Start { seq, .. } => Paired::Start(*seq),
            PgEvent::Done { seq, .. } | PgEvent::Abandoned { seq } => Paired::Outcome(*seq),
        });
    }
}
