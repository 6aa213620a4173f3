//! The four-service checkout chain of the tracing guides: order calls
//! inventory, payment and shipping, each a Flask app under gunicorn.
use std::{process::Command, time::Duration};

use crate::procs::{Proc, apps_dir, free_port, gunicorn, wait_port};

pub struct Chain {
    pub order: u16,
    pub inventory: u16,
    pub payment: u16,
    pub shipping: u16,
    pub procs: Vec<Proc>,
}

impl Chain {
    /// Free ports for the four services.
    pub fn ports() -> [u16; 4] {
        let mut ports = [0u16; 4];
        for i in 0..4 {
            ports[i] = loop {
                let candidate = free_port();
                if !ports.contains(&candidate) {
                    break candidate;
                }
            };
        }
        ports
    }

    /// Starts the chain on `ports` (order, inventory, payment, shipping),
    /// with `workers` gunicorn workers each and extra environment for order.
    pub fn start(ports: [u16; 4], workers: u32, order_env: &[(&str, String)]) -> Chain {
        Chain::start_with_env(ports, workers, &[], order_env)
    }

    /// Like [`Chain::start`], with `env` for all four services as well.
    pub fn start_with_env(
        ports: [u16; 4],
        workers: u32,
        env: &[(&str, String)],
        order_env: &[(&str, String)],
    ) -> Chain {
        let dir = apps_dir("checkout");
        let [order, inventory, payment, shipping] = ports;
        let mut procs = vec![
            gunicorn(&dir, "inventory", inventory, workers, env),
            gunicorn(&dir, "payment", payment, workers, env),
            gunicorn(&dir, "shipping", shipping, workers, env),
        ];
        let mut env = env.to_vec();
        env.extend([
            ("INVENTORY_URL", format!("http://127.0.0.1:{inventory}")),
            ("PAYMENT_URL", format!("http://127.0.0.1:{payment}")),
            ("SHIPPING_URL", format!("http://127.0.0.1:{shipping}")),
        ]);
        env.extend(order_env.iter().cloned());
        procs.push(gunicorn(&dir, "order", order, workers, &env));
        Chain {
            order,
            inventory,
            payment,
            shipping,
            procs,
        }
    }

    /// Like [`Chain::start`] (one worker each), with order run under the
    /// OpenTelemetry Python SDK's auto-instrumentation (Flask and requests),
    /// exporting its own spans over OTLP/HTTP to `traces_url`
    /// (`.../v1/traces`): a service that propagates context itself.
    pub fn start_with_sdk_order(ports: [u16; 4], traces_url: &str) -> Chain {
        let dir = apps_dir("checkout");
        let [order, inventory, payment, shipping] = ports;
        let mut procs = vec![
            gunicorn(&dir, "inventory", inventory, 1, &[]),
            gunicorn(&dir, "payment", payment, 1, &[]),
            gunicorn(&dir, "shipping", shipping, 1, &[]),
        ];
        let mut cmd = Command::new("opentelemetry-instrument");
        for (k, _) in std::env::vars() {
            if k.starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(["python3", "-m", "gunicorn", "-w", "1", "-b"])
            .arg(format!("127.0.0.1:{order}"))
            .arg("--chdir")
            .arg(&dir)
            .arg("order:app")
            .env("INVENTORY_URL", format!("http://127.0.0.1:{inventory}"))
            .env("PAYMENT_URL", format!("http://127.0.0.1:{payment}"))
            .env("SHIPPING_URL", format!("http://127.0.0.1:{shipping}"))
            .env("OTEL_SERVICE_NAME", "order")
            .env("OTEL_TRACES_EXPORTER", "otlp_proto_http")
            .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces_url)
            .env("OTEL_METRICS_EXPORTER", "none")
            .env("OTEL_LOGS_EXPORTER", "none")
            .env("OTEL_BSP_SCHEDULE_DELAY", "200");
        let mut p = Proc::spawn("order-sdk", cmd);
        if !wait_port(order, Duration::from_secs(30)) {
            p.stop();
            panic!(
                "order under the OTel SDK did not listen on {order}:\n{}",
                p.log()
            );
        }
        procs.push(p);
        Chain {
            order,
            inventory,
            payment,
            shipping,
            procs,
        }
    }

    /// `--port a,b,c,d`: the agent traces exactly these four services.
    pub fn port_args(ports: [u16; 4]) -> Vec<String> {
        vec![
            "--port".into(),
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ]
    }

    pub fn order_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/order", self.order)
    }
}
