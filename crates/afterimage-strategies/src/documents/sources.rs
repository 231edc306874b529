//! Document sources: a list in memory, a folder of text files, files matching a glob,
//! JSONL files.

use std::path::{Path, PathBuf};

use afterimage_core::{Document, DocumentSource, StrategyError, content_id};
use async_trait::async_trait;
use serde_json::{Map, Value};

/// Anything [`InMemoryDocumentProvider::new`] accepts as a document: a [`Document`] as
/// is, or a text that becomes one with a content-hash id.
pub trait IntoDocument {
    /// The document.
    fn into_document(self) -> Document;
}

impl IntoDocument for Document {
    fn into_document(self) -> Document {
        self
    }
}

impl IntoDocument for String {
    fn into_document(self) -> Document {
        Document::new(self)
    }
}

impl IntoDocument for &str {
    fn into_document(self) -> Document {
        Document::new(self)
    }
}

impl IntoDocument for &String {
    fn into_document(self) -> Document {
        Document::new(self.as_str())
    }
}

/// Whether `text` has at least `min_length` characters (at least one) once trimmed.
fn long_enough(text: &str, min_length: usize) -> bool {
    let min_length = min_length.max(1);
    // `take` keeps this cheap on long documents.
    text.trim().chars().take(min_length).count() >= min_length
}

fn io_error(path: &Path, source: std::io::Error) -> StrategyError {
    StrategyError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The text files at `files` (absolute paths) as documents whose ids are the paths;
/// unreadable, non-UTF-8, empty and too short files are skipped with a warning naming
/// the file.
fn read_text_files(files: &[PathBuf], min_length: usize) -> Vec<Document> {
    let mut documents = Vec::with_capacity(files.len());
    for path in files {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "skipping unreadable file");
                continue;
            }
        };
        let Ok(text) = String::from_utf8(bytes) else {
            tracing::warn!(file = %path.display(), "skipping file that is not UTF-8");
            continue;
        };
        if !long_enough(&text, min_length) {
            tracing::warn!(
                file = %path.display(),
                min_length,
                "skipping file: empty or too short"
            );
            continue;
        }
        documents.push(Document::with_id(path.to_string_lossy(), text));
    }
    documents
}

/// Whether `pattern` holds a glob metacharacter (`*`, `?` or `[`).
fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// The files (not folders) matching the shell glob `pattern`, as absolute paths in
/// sorted order. `*` and `?` stop at `/` and skip names starting with a dot, as in a
/// shell; `**` crosses folders.
fn expand_glob(pattern: &str) -> Result<Vec<PathBuf>, StrategyError> {
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let paths = glob::glob_with(pattern, options)
        .map_err(|e| StrategyError::Config(format!("invalid glob pattern `{pattern}`: {e}")))?;
    let mut files = Vec::new();
    for entry in paths {
        match entry {
            Ok(path) if path.is_file() => match std::path::absolute(&path) {
                Ok(path) => files.push(path),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping file");
                }
            },
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(path = %e.path().display(), error = %e.error(), "skipping unreadable path");
            }
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// How to fix a pattern that matched nothing: where a relative pattern is looked up.
fn pattern_hint(pattern: &str) -> String {
    if Path::new(pattern).is_absolute() {
        "check the path".to_owned()
    } else {
        let cwd = std::env::current_dir()
            .map(|dir| dir.display().to_string())
            .unwrap_or_else(|_| "unknown".to_owned());
        format!("check the path; a relative pattern is relative to the current directory ({cwd})")
    }
}

/// Runs file reading off the async workers.
async fn blocking<T, F>(path: &Path, work: F) -> Result<T, StrategyError>
where
    F: FnOnce() -> Result<T, StrategyError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| io_error(path, std::io::Error::other(e.to_string())))?
}

/// Documents given in memory.
#[derive(Debug, Clone)]
pub struct InMemoryDocumentProvider {
    documents: Vec<Document>,
    min_length: usize,
}

impl InMemoryDocumentProvider {
    /// Documents from texts (each gets a content-hash id) or from [`Document`]s.
    pub fn new<I>(documents: I) -> Self
    where
        I: IntoIterator,
        I::Item: IntoDocument,
    {
        InMemoryDocumentProvider {
            documents: documents
                .into_iter()
                .map(IntoDocument::into_document)
                .collect(),
            min_length: 1,
        }
    }

    /// Skips documents shorter than this many characters after trimming (default 1).
    pub fn min_length(mut self, min_length: usize) -> Self {
        self.min_length = min_length;
        self
    }
}

#[async_trait]
impl DocumentSource for InMemoryDocumentProvider {
    async fn load(&self) -> Result<Vec<Document>, StrategyError> {
        let usable: Vec<Document> = self
            .documents
            .iter()
            .filter(|doc| {
                let keep = long_enough(&doc.text, self.min_length);
                if !keep {
                    tracing::warn!(
                        id = %doc.id,
                        min_length = self.min_length,
                        "skipping in-memory document: empty or too short"
                    );
                }
                keep
            })
            .cloned()
            .collect();
        if usable.is_empty() {
            return Err(StrategyError::NoDocuments {
                message: format!(
                    "none of the {} in-memory documents has at least {} character(s) of text",
                    self.documents.len(),
                    self.min_length.max(1)
                ),
            });
        }
        Ok(usable)
    }
}

/// Text files in a folder: `.txt` and `.md` by default, subfolders included, in path
/// order; each document's id is the file's absolute path.
#[derive(Debug, Clone)]
pub struct DirectoryDocumentProvider {
    root: PathBuf,
    extensions: Vec<String>,
    recursive: bool,
    min_length: usize,
}

impl DirectoryDocumentProvider {
    /// Every `.txt` and `.md` file under `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DirectoryDocumentProvider {
            root: path.into(),
            extensions: vec!["txt".to_owned(), "md".to_owned()],
            recursive: true,
            min_length: 1,
        }
    }

    /// The file extensions to read, with or without the dot, any case (default `txt`, `md`).
    pub fn extensions<I, S>(mut self, extensions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.extensions = extensions
            .into_iter()
            .map(|ext| ext.as_ref().trim().trim_start_matches('.').to_lowercase())
            .filter(|ext| !ext.is_empty())
            .collect();
        self
    }

    /// Whether to descend into subfolders (default true).
    pub fn recursive(mut self, recursive: bool) -> Self {
        self.recursive = recursive;
        self
    }

    /// Skips files shorter than this many characters after trimming (default 1).
    pub fn min_length(mut self, min_length: usize) -> Self {
        self.min_length = min_length;
        self
    }

    fn wanted(&self, path: &Path) -> bool {
        path.extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| self.extensions.iter().any(|e| e.eq_ignore_ascii_case(ext)))
    }

    fn collect(&self, folder: &Path, files: &mut Vec<PathBuf>) -> Result<(), std::io::Error> {
        for entry in std::fs::read_dir(folder)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                // Symlinked folders are not followed (their type is "symlink"), which
                // rules out cycles.
                if self.recursive
                    && let Err(e) = self.collect(&path, files)
                {
                    tracing::warn!(folder = %path.display(), error = %e, "skipping unreadable folder");
                }
            } else if (kind.is_file() || (kind.is_symlink() && path.is_file()))
                && self.wanted(&path)
            {
                files.push(path);
            }
        }
        Ok(())
    }

    fn load_blocking(&self) -> Result<Vec<Document>, StrategyError> {
        if self.extensions.is_empty() {
            return Err(StrategyError::Config(format!(
                "no file extensions to look for in {}",
                self.root.display()
            )));
        }
        let root = std::path::absolute(&self.root).map_err(|e| io_error(&self.root, e))?;
        let mut files = Vec::new();
        self.collect(&root, &mut files)
            .map_err(|e| io_error(&self.root, e))?;
        files.sort();
        let documents = read_text_files(&files, self.min_length);
        if documents.is_empty() {
            let patterns: Vec<String> = self.extensions.iter().map(|e| format!("*.{e}")).collect();
            return Err(StrategyError::NoDocuments {
                message: format!(
                    "{} holds no {} file{} with at least {} character(s) of UTF-8 text",
                    self.root.display(),
                    patterns.join(" or "),
                    if self.recursive {
                        " (subfolders included)"
                    } else {
                        ""
                    },
                    self.min_length.max(1)
                ),
            });
        }
        Ok(documents)
    }
}

#[async_trait]
impl DocumentSource for DirectoryDocumentProvider {
    async fn load(&self) -> Result<Vec<Document>, StrategyError> {
        let this = self.clone();
        blocking(&self.root, move || this.load_blocking()).await
    }
}

/// Text files matching a shell glob (`docs/**/*.md`, `notes/*.txt`), in path order;
/// each document's id is the file's absolute path.
///
/// A relative pattern is relative to the current directory. Files that are not UTF-8,
/// empty or shorter than [`min_length`](Self::min_length) are skipped with a warning.
#[derive(Debug, Clone)]
pub struct FileGlobDocumentProvider {
    pattern: String,
    min_length: usize,
}

impl FileGlobDocumentProvider {
    /// Every file matching `pattern`.
    pub fn new(pattern: impl Into<String>) -> Self {
        FileGlobDocumentProvider {
            pattern: pattern.into(),
            min_length: 1,
        }
    }

    /// Skips files shorter than this many characters after trimming (default 1).
    pub fn min_length(mut self, min_length: usize) -> Self {
        self.min_length = min_length;
        self
    }

    fn load_blocking(&self) -> Result<Vec<Document>, StrategyError> {
        let files = expand_glob(&self.pattern)?;
        let documents = read_text_files(&files, self.min_length);
        if documents.is_empty() {
            let found = if files.is_empty() {
                "matches no file".to_owned()
            } else {
                format!(
                    "matches {} file(s), none with at least {} character(s) of UTF-8 text",
                    files.len(),
                    self.min_length.max(1)
                )
            };
            return Err(StrategyError::NoDocuments {
                message: format!(
                    "the pattern `{}` {found}; {}",
                    self.pattern,
                    pattern_hint(&self.pattern)
                ),
            });
        }
        Ok(documents)
    }
}

#[async_trait]
impl DocumentSource for FileGlobDocumentProvider {
    async fn load(&self) -> Result<Vec<Document>, StrategyError> {
        let this = self.clone();
        blocking(Path::new(&self.pattern), move || this.load_blocking()).await
    }
}

/// Documents from JSONL files, one JSON object per line.
///
/// The path may be a glob (`data/*.jsonl`) when no file has that exact name; the
/// matching files are read in path order. Lines that are not a JSON object with a
/// string text field of [`min_length`](Self::min_length) characters are skipped with a
/// warning naming the file and line.
///
/// A sampling weight for the document, when given, lands in
/// `Document::metadata["weight"]` (read by
/// [`DocumentSampler`](crate::DocumentSampler)): from the field named by
/// [`weight_field`](Self::weight_field), else from `metadata.weight`. It must be a
/// positive number; anything else is ignored with a warning.
#[derive(Debug, Clone)]
pub struct JsonlDocumentProvider {
    path: PathBuf,
    text_field: String,
    preserve_ids: bool,
    include_metadata: bool,
    weight_field: Option<String>,
    min_length: usize,
}

impl JsonlDocumentProvider {
    /// The documents of the JSONL file at `path` (or of the files matching the glob
    /// `path`), text in the `text` field.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonlDocumentProvider {
            path: path.into(),
            text_field: "text".to_owned(),
            preserve_ids: false,
            include_metadata: false,
            weight_field: None,
            min_length: 1,
        }
    }

    /// The field holding the text (default `text`).
    pub fn text_field(mut self, field: impl Into<String>) -> Self {
        self.text_field = field.into();
        self
    }

    /// Use each line's `id` (or `metadata.context_id`) as the document id instead of
    /// a content hash (default false).
    pub fn preserve_ids(mut self, preserve: bool) -> Self {
        self.preserve_ids = preserve;
        self
    }

    /// Keep the line's other fields and its `metadata` object in
    /// [`Document::metadata`] (default false).
    pub fn include_metadata(mut self, include: bool) -> Self {
        self.include_metadata = include;
        self
    }

    /// The field holding the document's sampling weight, at the top level of the line
    /// or inside its `metadata` object (default: `metadata.weight` only).
    pub fn weight_field(mut self, field: impl Into<String>) -> Self {
        self.weight_field = Some(field.into());
        self
    }

    /// Skips documents shorter than this many characters after trimming (default 1).
    pub fn min_length(mut self, min_length: usize) -> Self {
        self.min_length = min_length;
        self
    }

    /// The line's weight value, if it has one.
    fn weight_value<'a>(&self, object: &'a Map<String, Value>) -> Option<(&'a Value, String)> {
        let nested = object.get("metadata").and_then(Value::as_object);
        match &self.weight_field {
            Some(field) => object
                .get(field)
                .or_else(|| nested.and_then(|m| m.get(field)))
                .map(|value| (value, field.clone())),
            None => nested
                .and_then(|m| m.get("weight"))
                .map(|value| (value, "metadata.weight".to_owned())),
        }
    }

    fn document(&self, line: &[u8], file: &Path, line_number: usize) -> Result<Document, String> {
        let line = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_owned())?;
        let value: Value =
            serde_json::from_str(line).map_err(|e| format!("not valid JSON ({e})"))?;
        let Value::Object(mut object) = value else {
            return Err("not a JSON object".to_owned());
        };
        let text = match object.remove(&self.text_field) {
            Some(Value::String(text)) => text,
            Some(_) => return Err(format!("field `{}` is not a string", self.text_field)),
            None => return Err(format!("no `{}` field", self.text_field)),
        };
        if !long_enough(&text, self.min_length) {
            return Err(format!(
                "text shorter than {} character(s)",
                self.min_length.max(1)
            ));
        }
        let id = if self.preserve_ids {
            id_of(object.get("id"))
                .or_else(|| id_of(object.get("metadata").and_then(|m| m.get("context_id"))))
        } else {
            None
        };
        let weight = match self.weight_value(&object) {
            Some((value, _)) if value.as_f64().is_some_and(|w| w.is_finite() && w > 0.0) => {
                Some(value.clone())
            }
            Some((value, field)) => {
                tracing::warn!(
                    file = %file.display(),
                    line = line_number,
                    "ignoring weight `{field}` = {value}: not a positive number"
                );
                None
            }
            None => None,
        };
        let id = id.unwrap_or_else(|| content_id(&text));
        let mut document = Document::with_id(id, text);
        if self.include_metadata {
            document.metadata = flatten_metadata(object);
        }
        if let Some(weight) = weight {
            document.metadata.insert("weight".to_owned(), weight);
        }
        Ok(document)
    }

    /// The files to read: the path itself, or the files its glob matches.
    fn files(&self) -> Result<Vec<PathBuf>, StrategyError> {
        let pattern = self.path.to_string_lossy();
        if !is_glob(&pattern) || self.path.exists() {
            return Ok(vec![self.path.clone()]);
        }
        let files = expand_glob(&pattern)?;
        if files.is_empty() {
            return Err(StrategyError::NoDocuments {
                message: format!(
                    "the pattern `{pattern}` matches no file; {}",
                    pattern_hint(&pattern)
                ),
            });
        }
        Ok(files)
    }

    fn load_file(&self, path: &Path, documents: &mut Vec<Document>) -> Result<(), StrategyError> {
        let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
        for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match self.document(line, path, index + 1) {
                Ok(document) => documents.push(document),
                Err(reason) => tracing::warn!(
                    file = %path.display(),
                    line = index + 1,
                    "skipping JSONL line: {reason}"
                ),
            }
        }
        Ok(())
    }

    fn load_blocking(&self) -> Result<Vec<Document>, StrategyError> {
        let files = self.files()?;
        let mut documents = Vec::new();
        for path in &files {
            self.load_file(path, &mut documents)?;
        }
        if documents.is_empty() {
            let wanted = format!(
                "line with a string `{}` field of at least {} character(s)",
                self.text_field,
                self.min_length.max(1)
            );
            let message = if files.len() == 1 {
                format!("{} has no {wanted}", self.path.display())
            } else {
                format!(
                    "none of the {} files matching {} has a {wanted}",
                    files.len(),
                    self.path.display()
                )
            };
            return Err(StrategyError::NoDocuments { message });
        }
        Ok(documents)
    }
}

/// An id from a string or number field; empty strings do not count.
fn id_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The line's other top-level fields, then its `metadata` object's entries (which win
/// on a clash, being the more deliberate of the two).
fn flatten_metadata(mut object: Map<String, Value>) -> Map<String, Value> {
    let nested = object.remove("metadata");
    let mut metadata = object;
    match nested {
        Some(Value::Object(nested)) => metadata.extend(nested),
        Some(other) => {
            metadata.insert("metadata".to_owned(), other);
        }
        None => {}
    }
    metadata
}

#[async_trait]
impl DocumentSource for JsonlDocumentProvider {
    async fn load(&self) -> Result<Vec<Document>, StrategyError> {
        let this = self.clone();
        blocking(&self.path, move || this.load_blocking()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_enough_counts_trimmed_characters() {
        assert!(!long_enough("", 0));
        assert!(!long_enough(" \n\t ", 1));
        assert!(long_enough(" é ", 1));
        assert!(!long_enough(" éé ", 3));
        assert!(long_enough(" ééé ", 3));
    }

    #[test]
    fn flatten_metadata_merges_nested_over_top_level() {
        let object =
            serde_json::json!({"source": "a", "lang": "en", "metadata": {"lang": "fr", "page": 2}})
                .as_object()
                .cloned()
                .unwrap();
        assert_eq!(
            Value::Object(flatten_metadata(object)),
            serde_json::json!({"source": "a", "lang": "fr", "page": 2})
        );
    }
}
