//! `seam check` output: an aligned table for people, JSON for scripts.
use std::fmt::Write as _;

use super::{Report, Status};

const HEADERS: [&str; 5] = ["FEATURE", "STATUS", "DETAIL", "WITHOUT IT", "FIX"];

/// The report as a table, then one line saying whether seam can run.
pub fn table(report: &Report) -> String {
    let rows: Vec<[String; 5]> = report
        .checks
        .iter()
        .map(|c| {
            let fix = if c.fix.is_empty() {
                "-"
            } else {
                c.fix.as_str()
            };
            [
                c.name.to_string(),
                c.status.as_str().to_string(),
                c.detail.clone(),
                c.without.to_string(),
                fix.to_string(),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 5]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(HEADERS);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4]]);
    }
    out.push('\n');
    out.push_str(&verdict(report));
    out.push('\n');
    out
}

/// One line: can seam run here, and what does it do without.
pub fn verdict(report: &Report) -> String {
    if let Some(message) = report.fatal_message() {
        return format!("seam {message}");
    }
    let degraded: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| {
            c.need == super::Need::Optional
                && matches!(c.status, Status::Missing | Status::Disabled)
        })
        .map(|c| c.name)
        .collect();
    if degraded.is_empty() {
        "seam can run here with every feature".to_string()
    } else {
        format!("seam can run here, without: {}", degraded.join(", "))
    }
}

/// The report as JSON: `{"can_run": bool, "checks": [...]}`.
pub fn json(report: &Report) -> String {
    let checks: Vec<serde_json::Value> = report
        .checks
        .iter()
        .map(|c| {
            serde_json::json!({
                "feature": c.name,
                "status": c.status.as_str(),
                "detail": c.detail,
                "need": c.need.as_str(),
                "without": c.without,
                "fix": c.fix,
                "disable_flag": c.feature.map(|f| f.name()),
            })
        })
        .collect();
    serde_json::json!({
        "can_run": report.can_run(),
        "verdict": verdict(report),
        "checks": checks,
    })
    .to_string()
}
