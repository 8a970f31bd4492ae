//! Maps field paths of a YAML document (`spec.packages[1].path`) to the line and column where they are written.
//!
//! serde_yaml reports positions only for syntax and type errors; checks that run after deserialization
//! (a dangling reference, a bucket in the wrong region) find their position here, from one event-level pass.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, Span};

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Positions of every node of one YAML document, keyed by field path.
///
/// A mapping entry is recorded at its key (where a reader looks for a field), a sequence item at the item.
#[derive(Debug, Clone, Default)]
pub struct PositionIndex {
    by_path: HashMap<String, Position>,
}

impl PositionIndex {
    /// The position of `path`, or of its nearest recorded ancestor (a missing field points at its parent).
    pub fn locate(&self, path: &str) -> Option<Position> {
        let mut candidate = path;
        loop {
            if let Some(position) = self.by_path.get(candidate) {
                return Some(*position);
            }
            if candidate.is_empty() {
                return None;
            }
            candidate = parent_path(candidate);
        }
    }
}

impl PositionIndex {
    /// The path of the first-written key named `key`, anywhere in the document (e.g. a merge key `<<`).
    pub fn first_key_named(&self, key: &str) -> Option<String> {
        self.by_path
            .iter()
            .filter(|(path, _)| path.as_str() == key || path.ends_with(&format!(".{key}")))
            .min_by_key(|(_, position)| **position)
            .map(|(path, _)| path.clone())
    }
}

fn parent_path(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(cut) => &path[..cut],
        None => "",
    }
}

/// Builds one index per document of `source`. A syntax error ends the pass early; serde_yaml reports it.
pub fn index_documents(source: &str) -> Vec<PositionIndex> {
    let mut documents = Vec::new();
    let mut walker = Walker::default();
    for item in Parser::new_from_str(source) {
        let Ok((event, span)) = item else { break };
        match event {
            Event::DocumentStart(_) => walker = Walker::default(),
            Event::DocumentEnd => documents.push(std::mem::take(&mut walker.index)),
            other => walker.visit(other, span),
        }
    }
    documents
}

enum Frame {
    Mapping { path: String, pending_key: Option<String> },
    Sequence { path: String, next_index: usize },
}

#[derive(Default)]
struct Walker {
    index: PositionIndex,
    stack: Vec<Frame>,
}

impl Walker {
    fn visit(&mut self, event: Event<'_>, span: Span) {
        let position = Position { line: span.start.line(), column: span.start.col() + 1 };
        match event {
            Event::Scalar(value, ..) => {
                if let Some(Frame::Mapping { path, pending_key }) = self.stack.last_mut() {
                    if pending_key.is_none() {
                        let key_path = join(path, &value);
                        self.index.by_path.insert(key_path.clone(), position);
                        *pending_key = Some(key_path);
                        return;
                    }
                }
                self.enter_value(position);
                self.finish_value();
            }
            Event::Alias(_) => {
                self.enter_value(position);
                self.finish_value();
            }
            Event::MappingStart(..) => {
                let path = self.enter_value(position);
                self.stack.push(Frame::Mapping { path, pending_key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.enter_value(position);
                self.stack.push(Frame::Sequence { path, next_index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                // The container was the value of its parent's pending key: that entry is complete now.
                self.finish_value();
            }
            _ => {}
        }
    }

    /// Records a value node and returns its path. Scalar values finish their entry at once.
    fn enter_value(&mut self, position: Position) -> String {
        let path = match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Mapping { pending_key, .. }) => pending_key.clone().unwrap_or_default(),
            Some(Frame::Sequence { path, next_index }) => {
                let item = format!("{path}[{next_index}]");
                *next_index += 1;
                self.index.by_path.entry(item.clone()).or_insert(position);
                item
            }
        };
        self.index.by_path.entry(path.clone()).or_insert(position);
        path
    }

    fn finish_value(&mut self) {
        if let Some(Frame::Mapping { pending_key, .. }) = self.stack.last_mut() {
            *pending_key = None;
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_keys_items_and_documents() {
        let source = "kind: Role\nspec:\n  tags: {a: b}\n  packages:\n    - path: x\n    - {path: y, installer: true}\n---\nkind: Bucket\n";
        let docs = index_documents(source);
        assert_eq!(docs.len(), 2);
        let first = &docs[0];
        assert_eq!(first.locate("kind"), Some(Position { line: 1, column: 1 }));
        assert_eq!(first.locate("spec.tags.a"), Some(Position { line: 3, column: 10 }));
        assert_eq!(first.locate("spec.packages[0].path"), Some(Position { line: 5, column: 7 }));
        assert_eq!(first.locate("spec.packages[1].installer"), Some(Position { line: 6, column: 17 }));
        assert_eq!(first.locate("spec.packages[1]"), Some(Position { line: 6, column: 7 }));
        // A missing field points at the nearest ancestor that exists.
        assert_eq!(first.locate("spec.packages[1].nope"), Some(Position { line: 6, column: 7 }));
        assert_eq!(docs[1].locate("kind"), Some(Position { line: 8, column: 1 }));
    }
}
