//! A report as a readable table (amounts in major units with the asset's
//! scale: `1,234.56 USD`), CSV (a `section` column first; sections apart by
//! a blank line, each with its header row; amounts in minor units, exact),
//! or one self-contained HTML page (no external assets, no script): the
//! header, the tie-out, the tables and SVG bar charts.

use super::{Chart, Check, Kind, Report, Section};
use serde_json::Value;
use std::fmt::Write;

/// A report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Table,
    Json,
    Csv,
    Html,
}

impl Format {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "table" => Some(Self::Table),
            "json" => Some(Self::Json),
            "csv" => Some(Self::Csv),
            "html" => Some(Self::Html),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Table => "text/plain; charset=utf-8",
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Html => "text/html; charset=utf-8",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Table => "txt",
            Self::Json => "json",
            Self::Csv => "csv",
            Self::Html => "html",
        }
    }

    /// `report` in this format.
    pub fn render(self, report: &Report) -> String {
        match self {
            Self::Table => table(report),
            Self::Json => report.to_json_text(),
            Self::Csv => csv(report),
            Self::Html => html(report),
        }
    }
}

/// `value` minor units of `asset` (`USD/2`) in major units with thousands
/// separators: `-1,234.56 USD`.
pub fn major_units(value: i128, asset: &str) -> String {
    let (code, scale) = match asset.split_once('/') {
        Some((code, scale)) => (code, scale.parse::<u32>().unwrap_or(0)),
        None => (asset, 0),
    };
    let magnitude = value.unsigned_abs();
    let unit = 10u128.pow(scale);
    let whole = (magnitude / unit).to_string();
    let mut grouped = String::new();
    for (index, digit) in whole.chars().enumerate() {
        if index > 0 && (whole.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if value < 0 { "-" } else { "" };
    if scale == 0 {
        format!("{sign}{grouped} {code}")
    } else {
        let fraction = magnitude % unit;
        format!(
            "{sign}{grouped}.{fraction:0width$} {code}",
            width = scale as usize
        )
    }
}

fn integer(value: &Value) -> i128 {
    match value {
        Value::Number(number) => number.as_i64().map_or(0, i128::from),
        Value::String(text) => text.parse().unwrap_or(0),
        _ => 0,
    }
}

/// A cell as the table shows it.
fn cell(section: &Section, row: &[Value], column: usize) -> String {
    let value = &row[column];
    match section.columns[column].1 {
        Kind::Amount if !value.is_null() => {
            let asset = section
                .columns
                .iter()
                .position(|(name, _)| *name == "asset")
                .and_then(|at| row[at].as_str())
                .unwrap_or("");
            major_units(integer(value), asset)
        }
        _ => plain(value),
    }
}

fn plain(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The header lines every format shows.
fn header_lines(report: &Report) -> Vec<(&'static str, String)> {
    let scope = &report.scope;
    let period = format!(
        "{} .. {}",
        scope
            .from
            .map_or("the first event".to_string(), |from| from.to_rfc3339()),
        scope.to.map_or(format!("seq {}", scope.as_of_seq), |to| {
            let end = if scope.to_included {
                "included"
            } else {
                "not included"
            };
            format!("{} ({end})", to.to_rfc3339())
        })
    );
    let failing = report.checks.iter().filter(|check| !check.agrees).count();
    let tie_out = if failing == 0 {
        format!("agrees ({} checks)", report.checks.len())
    } else {
        format!(
            "DOES NOT AGREE: {failing} of {} checks differ",
            report.checks.len()
        )
    };
    vec![
        ("report", report.name.as_str().to_string()),
        ("tenant", scope.tenant_id.clone()),
        ("as of seq", scope.as_of_seq.to_string()),
        (
            "chain hash",
            scope.chain_hash.clone().unwrap_or_else(|| "none".into()),
        ),
        ("period", period),
        ("tie-out", tie_out),
    ]
}

/// The tie-out as a section, for the table, CSV and HTML.
fn checks_section(checks: &[Check]) -> Section {
    Section {
        name: "tie_out",
        title: "Tie-out",
        columns: vec![
            ("check", Kind::Text),
            ("subject", Kind::Text),
            ("asset", Kind::Text),
            ("report", Kind::Amount),
            ("ledger", Kind::Amount),
            ("agrees", Kind::Flag),
        ],
        rows: checks
            .iter()
            .map(|check| {
                vec![
                    Value::from(check.check),
                    Value::from(check.subject.clone()),
                    Value::from(check.asset.clone()),
                    super::number(check.report),
                    super::number(check.ledger),
                    Value::from(check.agrees),
                ]
            })
            .collect(),
    }
}

fn all_sections(report: &Report) -> Vec<Section> {
    let mut sections = vec![checks_section(&report.checks)];
    sections.extend(report.sections.iter().cloned());
    sections
}

/// The readable table.
fn table(report: &Report) -> String {
    let mut out = String::new();
    for (label, value) in header_lines(report) {
        let _ = writeln!(out, "{label:<11} {value}");
    }
    for section in all_sections(report) {
        let _ = writeln!(out, "\n{}", section.title);
        let cells: Vec<Vec<String>> = section
            .rows
            .iter()
            .map(|row| {
                (0..section.columns.len())
                    .map(|at| cell(&section, row, at))
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = section
            .columns
            .iter()
            .enumerate()
            .map(|(at, (name, _))| {
                cells
                    .iter()
                    .map(|row| row[at].chars().count())
                    .chain([name.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |values: Vec<String>| {
            values
                .iter()
                .enumerate()
                .map(|(at, value)| match section.columns[at].1 {
                    Kind::Amount | Kind::Number => format!("{value:>width$}", width = widths[at]),
                    _ => format!("{value:<width$}", width = widths[at]),
                })
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let names = section
            .columns
            .iter()
            .map(|(name, _)| name.to_string())
            .collect();
        let _ = writeln!(out, "{}", line(names));
        for row in cells {
            let _ = writeln!(out, "{}", line(row));
        }
    }
    out
}

/// A CSV field: quoted when it holds a separator, a quote or a line
/// break; a text a spreadsheet would run as a formula (one starting with
/// `=`, `+`, `-`, `@`, a tab or a carriage return, such as a reference
/// from a processor's file) is prefixed with `'`, unless it is a number.
fn csv_field(text: &str) -> String {
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']) && !is_number(text);
    let text = if formula {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// Whether `text` is a decimal number (an amount, signed).
fn is_number(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let mut parts = digits.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    all_digits(whole) && parts.next().is_none_or(all_digits)
}

/// The CSV: a `header` section of fields and values, then each section.
fn csv(report: &Report) -> String {
    let mut out = String::from("section,field,value\n");
    for (label, value) in header_lines(report) {
        let _ = writeln!(out, "header,{},{}", csv_field(label), csv_field(&value));
    }
    for section in all_sections(report) {
        out.push('\n');
        let names: Vec<&str> = section.columns.iter().map(|(name, _)| *name).collect();
        let _ = writeln!(out, "section,{}", names.join(","));
        for row in &section.rows {
            let fields: Vec<String> = row.iter().map(|value| csv_field(&plain(value))).collect();
            let _ = writeln!(out, "{},{}", section.name, fields.join(","));
        }
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart: one bar per label, negative bars to the left of
/// the axis.
fn svg(chart: &Chart) -> String {
    let (width, bar, gap, label_width) = (640i128, 18i128, 6i128, 180i128);
    let height = (bar + gap) * chart.bars.len() as i128 + 40;
    let largest = chart
        .bars
        .iter()
        .map(|(_, value)| value.abs())
        .max()
        .unwrap_or(0)
        .max(1);
    let half = (width - label_width - 20) / 2;
    let axis = label_width + half;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"{}\">\
         <text x=\"0\" y=\"16\" font-size=\"14\" font-weight=\"bold\">{}</text>\
         <line x1=\"{axis}\" y1=\"24\" x2=\"{axis}\" y2=\"{height}\" stroke=\"#888\"/>",
        escape(&chart.title),
        escape(&chart.title)
    );
    for (index, (label, value)) in chart.bars.iter().enumerate() {
        let y = 28 + index as i128 * (bar + gap);
        let length = value.abs() * half / largest;
        let x = if *value < 0 { axis - length } else { axis };
        let color = if *value < 0 { "#c0504d" } else { "#4f81bd" };
        let _ = write!(
            out,
            "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text>\
             <rect x=\"{x}\" y=\"{y}\" width=\"{length}\" height=\"{bar}\" fill=\"{color}\"><title>{}</title></rect>",
            y + bar - 4,
            escape(label),
            escape(&major_units(*value, &chart.asset))
        );
    }
    out.push_str("</svg>");
    out
}

/// The self-contained HTML page.
fn html(report: &Report) -> String {
    let title = format!("{} report", report.name.as_str());
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/><title>{}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #ccc;padding:2px 8px}}td.n{{text-align:right}}\
         .ok{{color:#2e7d32}}.bad{{color:#c62828;font-weight:bold}}</style></head><body>\n<h1>{}</h1>\n<dl>",
        escape(&title),
        escape(&title)
    );
    let status = if report.ties_out() { "ok" } else { "bad" };
    for (label, value) in header_lines(report) {
        let class = if label == "tie-out" { status } else { "" };
        let _ = write!(
            out,
            "<dt>{}</dt><dd class=\"{class}\">{}</dd>",
            escape(label),
            escape(&value)
        );
    }
    out.push_str("</dl>\n");
    for chart in &report.charts {
        out.push_str(&svg(chart));
        out.push('\n');
    }
    for section in all_sections(report) {
        let _ = write!(out, "<h2>{}</h2><table><tr>", escape(section.title));
        for (name, _) in &section.columns {
            let _ = write!(out, "<th>{}</th>", escape(name));
        }
        out.push_str("</tr>");
        for row in &section.rows {
            out.push_str("<tr>");
            for (at, (_, kind)) in section.columns.iter().enumerate() {
                let class = if matches!(kind, Kind::Amount | Kind::Number) {
                    " class=\"n\""
                } else {
                    ""
                };
                let _ = write!(out, "<td{class}>{}</td>", escape(&cell(&section, row, at)));
            }
            out.push_str("</tr>");
        }
        out.push_str("</table>\n");
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::{csv_field, major_units};

    #[test]
    fn a_csv_text_a_spreadsheet_would_run_is_prefixed_and_numbers_are_not() {
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("+1+cmd"), "'+1+cmd");
        assert_eq!(csv_field("-2+3"), "'-2+3");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("\tx"), "'\tx");
        assert_eq!(csv_field("-12500"), "-12500");
        assert_eq!(csv_field("-0.05"), "-0.05");
        assert_eq!(csv_field("-"), "'-");
        assert_eq!(csv_field("ch_1"), "ch_1");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }

    #[test]
    fn amounts_show_in_major_units_with_the_asset_scale() {
        assert_eq!(major_units(123_456, "USD/2"), "1,234.56 USD");
        assert_eq!(major_units(-5, "USD/2"), "-0.05 USD");
        assert_eq!(major_units(1_000_000, "JPY/0"), "1,000,000 JPY");
        assert_eq!(major_units(12_345_678, "KWD/3"), "12,345.678 KWD");
        assert_eq!(major_units(0, "EUR/2"), "0.00 EUR");
    }
}
