//! Real third-party servers for end-to-end tests, each on a free loopback
//! port in a scratch directory, stopped when dropped.
use std::{path::PathBuf, process::Command, time::Duration};

use crate::procs::{Proc, free_port, scratch_dir, wait_port};

/// PostgreSQL from the machine's packages, run as the `postgres` user (it
/// refuses root), with a database `shop` and a table `items`.
pub struct Postgres {
    pub port: u16,
    _proc: Proc,
    dir: PathBuf,
}

impl Postgres {
    pub fn start() -> Postgres {
        let port = free_port();
        let dir = scratch_dir().join(format!("pg-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(chown.success());
        let data = dir.join("data");
        let init = Command::new("runuser")
            .args([
                "-u", "postgres", "--", "initdb", "-A", "trust", "-U", "postgres", "-D",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--", "postgres", "-D"])
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]);
        let proc = Proc::spawn("postgres", cmd);
        assert!(
            wait_port(port, Duration::from_secs(30)),
            "postgres:\n{}",
            proc.log()
        );
        let pg = Postgres {
            port,
            _proc: proc,
            dir,
        };
        pg.psql("postgres", "CREATE DATABASE shop");
        pg.psql(
            "shop",
            "CREATE TABLE items (id int, name text); INSERT INTO items VALUES (42, 'widget')",
        );
        pg
    }

    pub fn psql(&self, db: &str, sql: &str) {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A libpq connection string for database `shop`.
    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=shop user=postgres",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self._proc.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// redis-server from Debian's packages, without persistence.
pub struct Redis {
    pub port: u16,
    _proc: Proc,
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .current_dir(scratch_dir());
        let proc = Proc::spawn("redis", cmd);
        assert!(
            wait_port(port, Duration::from_secs(10)),
            "redis:\n{}",
            proc.log()
        );
        Redis { port, _proc: proc }
    }
}

/// nginx with a generated configuration; `server` is the body of one
/// `server {}` block, `{port}` in it is replaced by the chosen port.
pub struct Nginx {
    pub port: u16,
    pub dir: PathBuf,
    _proc: Proc,
}

impl Nginx {
    pub fn start(server: &str) -> Nginx {
        let port = free_port();
        let dir = scratch_dir().join(format!("nginx-{port}"));
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let conf = format!(
            "daemon off;\nworker_processes 1;\nerror_log {dir}/logs/error.log;\npid {dir}/nginx.pid;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n access_log off;\n client_body_temp_path {dir}/body;\n proxy_temp_path {dir}/proxy;\n\
             fastcgi_temp_path {dir}/fcgi;\n uwsgi_temp_path {dir}/uwsgi;\n scgi_temp_path {dir}/scgi;\n\
             server {{\n{}\n }}\n}}\n",
            server.replace("{port}", &port.to_string()),
            dir = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut cmd = Command::new("nginx");
        cmd.arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"));
        let proc = Proc::spawn("nginx", cmd);
        assert!(
            wait_port(port, Duration::from_secs(10)),
            "nginx:\n{}",
            proc.log()
        );
        Nginx {
            port,
            dir,
            _proc: proc,
        }
    }
}
