//! Renders a plan for people (Terraform-style text, unified diffs of documents) and for programs (stable JSON).

use std::fmt::Write;

use anstyle::{AnsiColor, Style};
use serde_json::{json, Value};
use similar::{ChangeTag, TextDiff};

use super::{Action, Change, FieldChange, Mode, Plan};

/// Colours when writing to a terminal; `plain()` otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    create: Style,
    update: Style,
    delete: Style,
    bold: Style,
    dim: Style,
}

impl Palette {
    pub fn colored() -> Self {
        Palette {
            create: AnsiColor::Green.on_default(),
            update: AnsiColor::Yellow.on_default(),
            delete: AnsiColor::Red.on_default(),
            bold: Style::new().bold(),
            dim: Style::new().dimmed(),
        }
    }

    pub fn plain() -> Self {
        Palette {
            create: Style::new(),
            update: Style::new(),
            delete: Style::new(),
            bold: Style::new(),
            dim: Style::new(),
        }
    }

    /// Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org).
    pub fn for_terminal(is_terminal: bool) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        if is_terminal && !no_color {
            Palette::colored()
        } else {
            Palette::plain()
        }
    }

    fn paint(&self, style: Style, text: &str) -> String {
        format!("{}{text}{}", style.render(), style.render_reset())
    }
}

fn symbol(action: Action) -> &'static str {
    match action {
        Action::Create => "+",
        Action::Update => "~",
        Action::Replace => "-/+",
        Action::Delete => "-",
    }
}

fn style_of(palette: &Palette, action: Action) -> Style {
    match action {
        Action::Create => palette.create,
        Action::Update => palette.update,
        Action::Replace | Action::Delete => palette.delete,
    }
}

/// The plan as text.
pub fn text(plan: &Plan, palette: &Palette) -> String {
    let mut out = String::new();
    let account = plan.account.as_deref().map(|a| format!(" in account {a}")).unwrap_or_default();
    if plan.has_changes() {
        let verb = match plan.options.mode {
            Mode::Apply => "perform these actions on",
            Mode::Destroy => "destroy these resources of",
        };
        let _ = writeln!(out, "imagectl will {verb} stack {}{account}:\n", plan.stack);
        for change in &plan.changes {
            render_change(&mut out, change, palette);
        }
    }
    if !plan.conflicts.is_empty() {
        let _ = writeln!(out, "{}", palette.paint(palette.bold, "Conflicts (left untouched):"));
        for conflict in &plan.conflicts {
            let _ =
                writeln!(out, "  {} {}: {}", palette.paint(palette.delete, "!"), conflict.resource, conflict.message);
        }
        out.push('\n');
    }
    if !plan.notes.is_empty() {
        let _ = writeln!(out, "{}", palette.paint(palette.bold, "Notes:"));
        for note in &plan.notes {
            let _ = writeln!(out, "  {}: {}", note.resource, note.message);
        }
        out.push('\n');
    }
    let _ = writeln!(out, "{}", palette.paint(palette.bold, &summary_line(plan)));
    out
}

pub fn summary_line(plan: &Plan) -> String {
    if !plan.has_changes() {
        return format!("No changes. {} resource(s) match the manifests.", plan.unchanged);
    }
    format!(
        "Plan: {} to create, {} to update, {} to replace, {} to delete.",
        plan.count(Action::Create),
        plan.count(Action::Update),
        plan.count(Action::Replace),
        plan.count(Action::Delete)
    )
}

fn render_change(out: &mut String, change: &Change, palette: &Palette) {
    let style = style_of(palette, change.action);
    let what = match change.action {
        Action::Create => {
            change.reason.as_ref().map_or_else(|| "will be created".to_owned(), |r| format!("will be created: {r}"))
        }
        Action::Update => "will be updated in place".to_owned(),
        Action::Replace => format!("must be replaced: {}", change.reason.as_deref().unwrap_or("")),
        Action::Delete => "will be deleted".to_owned(),
    };
    let _ = writeln!(
        out,
        "{:>3} {} {what}",
        palette.paint(style, symbol(change.action)),
        palette.paint(palette.bold, &change.resource.to_string())
    );
    let width = change.fields.iter().map(|f| f.field.len()).max().unwrap_or(0);
    for field in &change.fields {
        render_field(out, field, width, change.action, palette);
    }
    out.push('\n');
}

fn render_field(out: &mut String, field: &FieldChange, width: usize, action: Action, palette: &Palette) {
    let indent = "      ";
    // An empty value before (no tags, no encryption) reads better as an addition than as a removal of nothing.
    let empty = |v: &Option<Value>| match v {
        Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    };
    let field = &FieldChange {
        before: if empty(&field.before) { None } else { field.before.clone() },
        after: if empty(&field.after) && field.before.is_some() { None } else { field.after.clone() },
        ..field.clone()
    };
    let (sign, style) = match (&field.before, &field.after) {
        (None, Some(_)) => ("+", palette.create),
        (Some(_), None) => ("-", palette.delete),
        _ if action == Action::Create => ("+", palette.create),
        _ => ("~", palette.update),
    };
    let name = format!("{:<width$}", field.field);
    let forces =
        if field.forces_replacement { palette.paint(palette.delete, "  # forces replacement") } else { String::new() };
    match (&field.before, &field.after) {
        (Some(Value::Array(before)), Some(Value::Array(after))) if all_scalars(before) && all_scalars(after) => {
            // Sets (policy ARNs, subscriptions): list what leaves and what arrives, not the whole list twice.
            let _ = writeln!(out, "{indent}{} {}:", palette.paint(style, sign), field.field);
            for gone in before.iter().filter(|v| !after.contains(v)) {
                let _ = writeln!(out, "          {}", palette.paint(palette.delete, &format!("- {}", scalar(gone))));
            }
            for new in after.iter().filter(|v| !before.contains(v)) {
                let _ = writeln!(out, "          {}", palette.paint(palette.create, &format!("+ {}", scalar(new))));
            }
        }
        (Some(before), Some(after)) if is_document(before) || is_document(after) => {
            let _ = writeln!(out, "{indent}{} {}:", palette.paint(style, sign), field.field);
            render_document_diff(out, before, after, palette);
        }
        (Some(before), Some(after)) => {
            let _ = writeln!(
                out,
                "{indent}{} {name} = {} -> {}{forces}",
                palette.paint(style, sign),
                scalar(before),
                scalar(after)
            );
        }
        (None, Some(value)) | (Some(value), None) => {
            let rendered = if is_document(value) { indented_json(value, indent.len() + 4) } else { scalar(value) };
            let _ = writeln!(out, "{indent}{} {name} = {rendered}{forces}", palette.paint(style, sign));
        }
        (None, None) => {}
    }
}

fn is_document(value: &Value) -> bool {
    match value {
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => items.iter().any(|v| v.is_object() || v.is_array()) || items.len() > 3,
        _ => false,
    }
}

fn all_scalars(items: &[Value]) -> bool {
    items.iter().all(|v| !v.is_object() && !v.is_array())
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "(none)".to_owned(),
        other => other.to_string(),
    }
}

fn indented_json(value: &Value, indent: usize) -> String {
    let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
    let pad = " ".repeat(indent);
    pretty
        .lines()
        .enumerate()
        .map(|(i, l)| if i == 0 { l.to_owned() } else { format!("{pad}{l}") })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A unified diff of two documents' pretty JSON, with two lines of context.
fn render_document_diff(out: &mut String, before: &Value, after: &Value, palette: &Palette) {
    let old = format!("{}\n", serde_json::to_string_pretty(before).unwrap_or_default());
    let new = format!("{}\n", serde_json::to_string_pretty(after).unwrap_or_default());
    let diff = TextDiff::from_lines(&old, &new);
    for group in diff.grouped_ops(2) {
        for op in group {
            for change in diff.iter_changes(&op) {
                let (sign, style) = match change.tag() {
                    ChangeTag::Delete => ("-", palette.delete),
                    ChangeTag::Insert => ("+", palette.create),
                    ChangeTag::Equal => (" ", palette.dim),
                };
                let line = change.value().trim_end_matches('\n');
                let _ = writeln!(out, "          {}", palette.paint(style, &format!("{sign} {line}")));
            }
        }
    }
}

/// The plan as the documented, stable JSON of `plan --output json` (see the README).
pub fn json(plan: &Plan) -> Value {
    let changes: Vec<Value> = plan
        .changes
        .iter()
        .map(|c| {
            json!({
                "resource": c.resource.to_string(),
                "kind": c.resource.kind.as_str(),
                "name": c.resource.name,
                "action": c.action,
                "reason": c.reason,
                "fields": c.fields,
                "steps": c.steps.iter().map(|s| s.describe()).collect::<Vec<_>>(),
                "after": c.after.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        })
        .collect();
    let notes = |notes: &[super::Note]| -> Vec<Value> {
        notes.iter().map(|n| json!({"resource": n.resource.to_string(), "message": n.message})).collect()
    };
    json!({
        "formatVersion": super::FORMAT_VERSION,
        "stack": plan.stack,
        "account": plan.account,
        "mode": plan.options.mode,
        "summary": {
            "create": plan.count(Action::Create),
            "update": plan.count(Action::Update),
            "replace": plan.count(Action::Replace),
            "delete": plan.count(Action::Delete),
            "unchanged": plan.unchanged,
            "conflicts": plan.conflicts.len(),
        },
        "changes": changes,
        "conflicts": notes(&plan.conflicts),
        "notes": notes(&plan.notes),
    })
}
