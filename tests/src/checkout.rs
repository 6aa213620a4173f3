//! The four-service checkout chain of the tracing guides: order calls
//! inventory, payment and shipping, each a Flask app under gunicorn.
use crate::procs::{Proc, apps_dir, free_port, gunicorn};

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
        let dir = apps_dir("checkout");
        let [order, inventory, payment, shipping] = ports;
        let mut procs = vec![
            gunicorn(&dir, "inventory", inventory, workers, &[]),
            gunicorn(&dir, "payment", payment, workers, &[]),
            gunicorn(&dir, "shipping", shipping, workers, &[]),
        ];
        let mut env = vec![
            ("INVENTORY_URL", format!("http://127.0.0.1:{inventory}")),
            ("PAYMENT_URL", format!("http://127.0.0.1:{payment}")),
            ("SHIPPING_URL", format!("http://127.0.0.1:{shipping}")),
        ];
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
