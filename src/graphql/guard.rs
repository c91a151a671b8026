//! What a request may cost, decided before async-graphql validates it.
//!
//! async-graphql's validation follows fragment spreads: a 1.4 KB query whose
//! fragments each spread the next one twice costs 2^levels of work before the
//! complexity limit can say "too complex". So every request passes [`check`] first,
//! in time linear in its size:
//!
//! 1. a lexer pass counts tokens and bracket nesting (before the parser, whose
//!    recursion would otherwise follow the nesting);
//! 2. the parsed document is walked once; each fragment's expansion (fields,
//!    spreads, expensive root fields) is computed once and memoized, so the sizes
//!    after expansion are known without expanding anything;
//! 3. every string in every argument, directive, default value and variable is
//!    checked for text the log or PostgreSQL cannot hold (a NUL character).
//!
//! The walk also tells which operation runs and whether it reads the event log
//! (the [`Expensive`] fields), which admission control needs before execution.

use std::collections::HashMap;

use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::parser::Positioned;
use async_graphql::{Name, Variables};
use async_graphql_value::{ConstValue, Value};

/// Most lexical tokens in one query document.
pub const MAX_TOKENS: usize = 20_000;
/// Deepest nesting of `{`, `[` and `(` in a query document (the parser recurses on
/// it; GraphiQL's introspection query nests 22 deep).
pub const MAX_NESTING: usize = 64;
/// Most fields a document selects once every fragment spread is expanded.
pub const MAX_FIELDS: u64 = 2_000;
/// Most fragment spreads a document makes once every spread is expanded.
pub const MAX_SPREADS: u64 = 500;

/// Root fields whose work grows with the event log rather than with a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expensive {
    /// Walks a log: `verifyEventLog` (the tenant's chains), `logDigest`.
    LogWalk,
    /// Replays one aggregate's history: `eventHistory`, `aggregateAt`.
    Replay,
}

impl Expensive {
    /// The expensive root query fields, by GraphQL name.
    pub const FIELDS: &'static [(&'static str, Expensive)] = &[
        ("verifyEventLog", Expensive::LogWalk),
        ("logDigest", Expensive::LogWalk),
        ("eventHistory", Expensive::Replay),
        ("aggregateAt", Expensive::Replay),
    ];

    fn of(field: &str) -> Option<Expensive> {
        Self::FIELDS
            .iter()
            .find(|(name, _)| *name == field)
            .map(|(_, kind)| *kind)
    }

    /// How many of these one request may ask for.
    pub fn max_per_request(self) -> u64 {
        match self {
            Expensive::LogWalk => 1,
            Expensive::Replay => 10,
        }
    }

    /// Its weight in the complexity limit (each also counts its selection).
    pub const fn complexity(self) -> usize {
        match self {
            Expensive::LogWalk => 5_000,
            Expensive::Replay => 500,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Expensive::LogWalk => "log-walking fields (verifyEventLog, logDigest)",
            Expensive::Replay => "history-replaying fields (eventHistory, aggregateAt)",
        }
    }
}

/// What the check learned about an admitted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The operation that will run (`None` when the document does not say which,
    /// which execution then refuses).
    pub kind: Option<OperationType>,
    /// It asks for at least one [`Expensive`] field.
    pub expensive: bool,
    /// Some object of its answer may get a response key twice: its lists are then
    /// not written as text while they resolve (decision 71).
    pub merges_keys: bool,
}

/// Why a request was refused before validation: always `VALIDATION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    /// The argument or variable at fault, when there is one.
    pub field: Option<String>,
}

impl Refusal {
    fn new(message: impl Into<String>) -> Refusal {
        Refusal {
            message: message.into(),
            field: None,
        }
    }

    fn nul(field: String) -> Refusal {
        Refusal {
            message: format!("{field}: text must not contain NUL characters"),
            field: Some(field),
        }
    }

    /// As a GraphQL error (code `VALIDATION`, not retryable).
    pub fn into_server_error(self) -> async_graphql::ServerError {
        let mut error = async_graphql::ServerError::new(self.message, None);
        let mut extensions = async_graphql::ErrorExtensionValues::default();
        extensions.set("code", "VALIDATION");
        extensions.set("retryable", false);
        if let Some(field) = self.field {
            extensions.set("field", field);
        }
        error.extensions = Some(extensions);
        error
    }
}

/// Parses and checks a request's query. On success the parsed document is
/// returned so that it is not parsed twice.
pub fn check(
    query: &str,
    variables: &Variables,
    operation_name: Option<&str>,
) -> Result<(ExecutableDocument, Checked), Refusal> {
    let (document, operations) = parse_and_check(query, variables)?;
    Ok((document, choose(&operations, operation_name)))
}

/// Lexer limits, variables, our own parse, then the document: everything
/// [`check`] and the extension do before async-graphql sees the request.
fn parse_and_check(
    query: &str,
    variables: &Variables,
) -> Result<(ExecutableDocument, Vec<Operation>), Refusal> {
    if let Some(parsed) = PARSED.get(query) {
        // (its text passed the lexer's limits when it was parsed)
        variables_nul(variables)?;
        return Ok(parsed);
    }
    lex(query)?;
    variables_nul(variables)?;
    let document = async_graphql::parser::parse_query(query)
        .map_err(|e| Refusal::new(format!("malformed query: {e}")))?;
    let operations = check_document(&document)?;
    PARSED.put(query, &document, &operations);
    Ok((document, operations))
}

/// Documents parsed and checked lately, by their text: clients send the same few
/// operations over and over with other variables, and parsing was about a twentieth
/// of a mutation's CPU. Only accepted documents are kept (whatever is refused is
/// checked again), only short texts, and only [`ParsedCache::ENTRIES`] of them.
struct ParsedCache {
    entries: std::sync::Mutex<Option<lru::LruCache<String, Parsed>>>,
}

/// A document as parsed, and its operations as checked.
type Parsed = (ExecutableDocument, Vec<Operation>);

impl ParsedCache {
    const ENTRIES: usize = 256;
    /// Longest text kept (bytes).
    const MAX_TEXT: usize = 4096;

    fn get(&self, query: &str) -> Option<Parsed> {
        if query.len() > Self::MAX_TEXT {
            return None;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.as_mut()?.get(query).cloned()
    }

    fn put(&self, query: &str, document: &ExecutableDocument, operations: &[Operation]) {
        if query.len() > Self::MAX_TEXT {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get_or_insert_with(|| {
                lru::LruCache::new(std::num::NonZeroUsize::new(Self::ENTRIES).expect("non-zero"))
            })
            .put(query.to_string(), (document.clone(), operations.to_vec()));
    }
}

static PARSED: ParsedCache = ParsedCache {
    entries: std::sync::Mutex::new(None),
};

/// One operation of a checked document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub name: Option<String>,
    pub kind: OperationType,
    pub expensive: bool,
    /// Some object of the answer may get a response key twice ([`merges_keys`]).
    pub merges_keys: bool,
}

/// The operation a request runs: the named one, or the only one.
pub fn choose(operations: &[Operation], operation_name: Option<&str>) -> Checked {
    let chosen = match operation_name {
        Some(wanted) => operations
            .iter()
            .find(|op| op.name.as_deref() == Some(wanted)),
        None if operations.len() == 1 => operations.first(),
        None => None,
    };
    Checked {
        kind: chosen.map(|op| op.kind),
        expensive: chosen.is_some_and(|op| op.expensive),
        merges_keys: chosen.is_none_or(|op| op.merges_keys),
    }
}

fn variables_nul(variables: &Variables) -> Result<(), Refusal> {
    for (name, value) in variables.iter() {
        nul(value, &mut format!("${name}"))?;
    }
    Ok(())
}

/// Checks a parsed document: text in its arguments, sizes once its fragments are
/// expanded, expensive fields per query. Returns its operations.
pub fn check_document(document: &ExecutableDocument) -> Result<Vec<Operation>, Refusal> {
    let mut walk = Walk {
        document,
        memo: HashMap::new(),
        visiting: Vec::new(),
    };
    let mut total = Size::default();
    for (_, fragment) in document.fragments.iter() {
        for directive in &fragment.node.directives {
            arguments_nul(&directive.node.arguments, "directive")?;
        }
    }
    let mut names: Vec<&Name> = document.fragments.keys().collect();
    names.sort();
    for name in names {
        let size = walk.fragment(name)?;
        total = total.add(&size);
    }
    let mut operations = Vec::new();
    for (name, operation) in document.operations.iter() {
        for variable in &operation.node.variable_definitions {
            if let Some(default) = &variable.node.default_value {
                nul(&default.node, &mut format!("${}", variable.node.name.node))?;
            }
        }
        for directive in &operation.node.directives {
            arguments_nul(&directive.node.arguments, "directive")?;
        }
        let size = walk.selection_set(&operation.node.selection_set.node)?;
        if operation.node.ty == OperationType::Query {
            for kind in [Expensive::LogWalk, Expensive::Replay] {
                let count = size.expensive(kind);
                if count > kind.max_per_request() {
                    return Err(Refusal::new(format!(
                        "the query asks for {count} {} where at most {} per request are allowed",
                        kind.describe(),
                        kind.max_per_request()
                    )));
                }
            }
        }
        total = total.add(&size);
        operations.push(Operation {
            name: name.map(|n| n.to_string()),
            kind: operation.node.ty,
            expensive: operation.node.ty == OperationType::Query
                && size.log_walks + size.replays > 0,
            // found below, once the sizes (which bound its walk) are known to be fine
            merges_keys: true,
        });
    }
    if total.fields > MAX_FIELDS {
        return Err(Refusal::new(format!(
            "the query selects {} fields once its fragments are expanded; at most {MAX_FIELDS} are allowed",
            display_count(total.fields)
        )));
    }
    if total.spreads > MAX_SPREADS {
        return Err(Refusal::new(format!(
            "the query makes {} fragment spreads once expanded; at most {MAX_SPREADS} are allowed",
            display_count(total.spreads)
        )));
    }
    let merges = merges_keys(document);
    for operation in &mut operations {
        operation.merges_keys = merges;
    }
    Ok(operations)
}

/// Whether some object of the document's answers may get a response key twice: a
/// field repeated (or aliased onto another's key) in one selection set, directly or
/// through fragments spread or inlined in it, at any depth. async-graphql merges
/// such keys' values, which text written while a list resolves cannot take part in
/// (decision 71). Conservative: type conditions and `@skip`/`@include` are ignored.
pub fn merges_keys(document: &ExecutableDocument) -> bool {
    /// The response keys of `set` with its fragments expanded; false once there
    /// are more than any accepted document has (then the answer is "maybe").
    fn keys<'a>(
        document: &'a ExecutableDocument,
        set: &'a SelectionSet,
        depth: usize,
        out: &mut Vec<&'a str>,
    ) -> bool {
        if depth > 64 || out.len() > MAX_FIELDS as usize {
            return false;
        }
        set.items.iter().all(|item| match &item.node {
            Selection::Field(field) => {
                out.push(field.node.response_key().node.as_str());
                true
            }
            Selection::FragmentSpread(spread) => {
                match document.fragments.get(&spread.node.fragment_name.node) {
                    Some(fragment) => {
                        keys(document, &fragment.node.selection_set.node, depth + 1, out)
                    }
                    None => true,
                }
            }
            Selection::InlineFragment(inline) => {
                keys(document, &inline.node.selection_set.node, depth + 1, out)
            }
        })
    }
    /// `set` or a selection set inside it (fragment spreads aside: every fragment
    /// is looked at on its own) repeats a key.
    fn repeats(document: &ExecutableDocument, set: &SelectionSet, depth: usize) -> bool {
        let mut found = Vec::new();
        if depth > 64 || !keys(document, set, 0, &mut found) {
            return true;
        }
        found.sort_unstable();
        if found.windows(2).any(|pair| pair[0] == pair[1]) {
            return true;
        }
        set.items.iter().any(|item| match &item.node {
            Selection::Field(field) => repeats(document, &field.node.selection_set.node, depth + 1),
            Selection::FragmentSpread(_) => false,
            Selection::InlineFragment(inline) => {
                repeats(document, &inline.node.selection_set.node, depth + 1)
            }
        })
    }
    document
        .fragments
        .values()
        .any(|fragment| repeats(document, &fragment.node.selection_set.node, 0))
        || document
            .operations
            .iter()
            .any(|(_, operation)| repeats(document, &operation.node.selection_set.node, 0))
}

fn display_count(n: u64) -> String {
    if n == u64::MAX {
        "more than 10^19".to_string()
    } else {
        n.to_string()
    }
}

/// Sizes of a selection once its spreads are expanded (saturating).
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    fields: u64,
    spreads: u64,
    log_walks: u64,
    replays: u64,
}

impl Size {
    fn add(&self, other: &Size) -> Size {
        Size {
            fields: self.fields.saturating_add(other.fields),
            spreads: self.spreads.saturating_add(other.spreads),
            log_walks: self.log_walks.saturating_add(other.log_walks),
            replays: self.replays.saturating_add(other.replays),
        }
    }

    fn expensive(&self, kind: Expensive) -> u64 {
        match kind {
            Expensive::LogWalk => self.log_walks,
            Expensive::Replay => self.replays,
        }
    }
}

struct Walk<'a> {
    document: &'a ExecutableDocument,
    /// Each fragment's expanded size, computed once.
    memo: HashMap<&'a str, Size>,
    /// Fragments being expanded (a spread back into one is a cycle).
    visiting: Vec<&'a str>,
}

impl<'a> Walk<'a> {
    fn fragment(&mut self, name: &'a Name) -> Result<Size, Refusal> {
        if let Some(size) = self.memo.get(name.as_str()) {
            return Ok(*size);
        }
        if self.visiting.contains(&name.as_str()) {
            return Err(Refusal::new(format!(
                "fragment \"{name}\" spreads itself (a fragment cycle)"
            )));
        }
        let Some(fragment) = self.document.fragments.get(name) else {
            // Unknown fragments are reported by validation; they cost nothing here.
            return Ok(Size::default());
        };
        self.visiting.push(name.as_str());
        let size = self.selection_set(&fragment.node.selection_set.node);
        self.visiting.pop();
        let size = size?;
        self.memo.insert(name.as_str(), size);
        Ok(size)
    }

    /// Sizes of a selection set. Expensive fields are counted where a root field
    /// would be; counted anywhere they are an upper bound, since only the query
    /// root has them.
    fn selection_set(&mut self, set: &'a SelectionSet) -> Result<Size, Refusal> {
        let mut size = Size::default();
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    arguments_nul(&field.arguments, "")?;
                    for directive in &field.directives {
                        arguments_nul(&directive.node.arguments, "directive")?;
                    }
                    size.fields = size.fields.saturating_add(1);
                    match Expensive::of(field.name.node.as_str()) {
                        Some(Expensive::LogWalk) => size.log_walks += 1,
                        Some(Expensive::Replay) => size.replays += 1,
                        None => {}
                    }
                    let inner = self.selection_set(&field.selection_set.node)?;
                    size = size.add(&Size {
                        // a nested selection's expensive fields are not root fields
                        log_walks: 0,
                        replays: 0,
                        ..inner
                    });
                }
                Selection::FragmentSpread(spread) => {
                    for directive in &spread.node.directives {
                        arguments_nul(&directive.node.arguments, "directive")?;
                    }
                    let inner = self.fragment(&spread.node.fragment_name.node)?;
                    size.spreads = size.spreads.saturating_add(1);
                    size = size.add(&inner);
                }
                Selection::InlineFragment(inline) => {
                    for directive in &inline.node.directives {
                        arguments_nul(&directive.node.arguments, "directive")?;
                    }
                    let inner = self.selection_set(&inline.node.selection_set.node)?;
                    size = size.add(&inner);
                }
            }
        }
        Ok(size)
    }
}

fn arguments_nul(
    arguments: &[(Positioned<Name>, Positioned<Value>)],
    prefix: &str,
) -> Result<(), Refusal> {
    for (name, value) in arguments {
        let mut path = if prefix.is_empty() {
            name.node.to_string()
        } else {
            format!("{prefix} {}", name.node)
        };
        nul(&value.node, &mut path)?;
    }
    Ok(())
}

/// The two value trees a request holds: literals in the document (which may name
/// variables) and variables' values. Both are walked by [`nul`].
trait Tree: Sized {
    fn text(&self) -> Option<&str>;
    fn items(&self) -> &[Self];
    fn fields(&self) -> Vec<(&str, &Self)>;
}

macro_rules! tree {
    ($value:ident) => {
        impl Tree for $value {
            fn text(&self) -> Option<&str> {
                match self {
                    $value::String(s) => Some(s),
                    _ => None,
                }
            }
            fn items(&self) -> &[Self] {
                match self {
                    $value::List(items) => items,
                    _ => &[],
                }
            }
            fn fields(&self) -> Vec<(&str, &Self)> {
                match self {
                    $value::Object(fields) => fields.iter().map(|(k, v)| (k.as_str(), v)).collect(),
                    _ => Vec::new(),
                }
            }
        }
    };
}
tree!(Value);
tree!(ConstValue);

/// Refuses a NUL character anywhere in `value` (strings and object keys), naming
/// its path.
fn nul<T: Tree>(value: &T, path: &mut String) -> Result<(), Refusal> {
    if value.text().is_some_and(|s| s.contains('\0')) {
        return Err(Refusal::nul(path.clone()));
    }
    for item in value.items() {
        nul(item, path)?;
    }
    for (key, item) in value.fields() {
        let len = path.len();
        path.push('.');
        path.push_str(key);
        if key.contains('\0') {
            return Err(Refusal::nul(path.clone()));
        }
        nul(item, path)?;
        path.truncate(len);
    }
    Ok(())
}

/// Counts tokens and bracket nesting in one pass (GraphQL's lexical grammar:
/// punctuators, names, numbers, strings and block strings; whitespace, commas and
/// comments are ignored). Malformed text is left for the parser to describe.
fn lex(query: &str) -> Result<(), Refusal> {
    let bytes = query.as_bytes();
    let mut i = 0;
    let mut tokens = 0usize;
    let mut depth = 0usize;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                if bytes[i..].starts_with(b"\"\"\"") {
                    i += 3;
                    while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                        i += if bytes[i..].starts_with(b"\\\"\"\"") {
                            4
                        } else {
                            1
                        };
                    }
                    i += 3;
                } else {
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(Refusal::new(format!(
                        "the query nests brackets deeper than {MAX_NESTING} levels (the recursion limit)"
                    )));
                }
                i += 1;
            }
            b'}' | b']' | b')' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'.' if bytes[i..].starts_with(b"...") => i += 3,
            b'_' | b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' => {
                i += 1;
                while i < bytes.len()
                    && matches!(bytes[i], b'_' | b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'+' | b'-')
                {
                    // `.` only continues a number (`1.5`); `...` starts a spread
                    if bytes[i] == b'.' && bytes[i..].starts_with(b"...") {
                        break;
                    }
                    i += 1;
                }
            }
            _ => i += 1,
        }
        tokens += 1;
        if tokens > MAX_TOKENS {
            return Err(Refusal::new(format!(
                "the query has more than {MAX_TOKENS} tokens"
            )));
        }
    }
    Ok(())
}

/// The same checks inside async-graphql, and admission for operations that did
/// not come through the HTTP handler (those sent over the WebSocket): the tenant's
/// slots, and the deadline for queries.
#[derive(Default)]
pub struct GuardExtension {
    operations: std::sync::Mutex<Option<Vec<Operation>>>,
}

/// Marks a request the HTTP handler has already checked and admitted.
pub struct Prechecked;

/// Creates one [`GuardExtension`] per request.
pub struct Guard;

impl async_graphql::extensions::ExtensionFactory for Guard {
    fn create(&self) -> std::sync::Arc<dyn async_graphql::extensions::Extension> {
        std::sync::Arc::new(GuardExtension::default())
    }
}

#[async_graphql::async_trait::async_trait]
impl async_graphql::extensions::Extension for GuardExtension {
    async fn parse_query(
        &self,
        ctx: &async_graphql::extensions::ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: async_graphql::extensions::NextParseQuery<'_>,
    ) -> async_graphql::ServerResult<ExecutableDocument> {
        if ctx.data_opt::<Prechecked>().is_some() {
            return next.run(ctx, query, variables).await;
        }
        let refused = |refusal: Refusal| {
            if let Some(services) = ctx.data_opt::<crate::AppContext>() {
                services.metrics.refused("cost");
            }
            refusal.into_server_error()
        };
        // Our own parse, checked, replaces async-graphql's (`next`): its parse step
        // also walks the recursion depth through every fragment spread, which is
        // exponential in the very documents refused here.
        let _ = next;
        let (document, operations) = parse_and_check(query, variables).map_err(refused)?;
        *self.operations.lock().unwrap_or_else(|e| e.into_inner()) = Some(operations);
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &async_graphql::extensions::ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: async_graphql::extensions::NextExecute<'_>,
    ) -> async_graphql::Response {
        let mut response = self.admit_and_execute(ctx, operation_name, next).await;
        super::types::unwrap_id_errors(&mut response.errors);
        response
    }
}

impl GuardExtension {
    /// Admission (WebSocket operations; the HTTP handler admits its own before
    /// they reach the schema) and the deadline of queries, around execution.
    async fn admit_and_execute(
        &self,
        ctx: &async_graphql::extensions::ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: async_graphql::extensions::NextExecute<'_>,
    ) -> async_graphql::Response {
        let operations = self
            .operations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let (Some(operations), Some(services), Some(caller)) = (
            operations,
            ctx.data_opt::<crate::AppContext>(),
            ctx.data_opt::<super::Caller>(),
        ) else {
            // checked and admitted by the HTTP handler (or a schema without services)
            return next.run(ctx, operation_name).await;
        };
        let checked = choose(&operations, operation_name);
        let refusal = |code: &str, message: String| {
            let mut error = async_graphql::ServerError::new(message, None);
            let mut extensions = async_graphql::ErrorExtensionValues::default();
            extensions.set("code", code);
            extensions.set("retryable", true);
            error.extensions = Some(extensions);
            async_graphql::Response::from_errors(vec![error])
        };
        let _permit = match services
            .admission
            .admit(caller.tenant(), checked.expensive)
            .await
        {
            Ok(permit) => permit,
            Err(busy @ crate::http::admission::Busy::Overloaded(_)) => {
                services.metrics.refused("overloaded");
                return refusal(crate::http::OVERLOADED, busy.to_string());
            }
            Err(busy) => {
                services.metrics.refused("tenant_concurrency");
                return refusal(crate::http::RATE_LIMITED, busy.to_string());
            }
        };
        if checked.kind == Some(OperationType::Mutation) {
            return next.run(ctx, operation_name).await;
        }
        let deadline = services.admission.limits().deadline;
        match tokio::time::timeout(deadline, next.run(ctx, operation_name)).await {
            Ok(response) => response,
            Err(_) => {
                services.metrics.refused("deadline");
                refusal(
                    crate::http::DEADLINE_EXCEEDED,
                    format!(
                        "the request did not finish within its deadline ({} s) and was cancelled",
                        deadline.as_secs_f64()
                    ),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each fragment spreads the next one twice: 2^levels fields once expanded.
    fn doubling(levels: usize) -> String {
        let mut query = String::from("query { ...F0 }\n");
        for level in 0..levels {
            query.push_str(&format!(
                "fragment F{level} on Query {{ ...F{next} ...F{next} }}\n",
                next = level + 1
            ));
        }
        query.push_str(&format!(
            "fragment F{levels} on Query {{ environments {{ id }} }}\n"
        ));
        query
    }

    #[test]
    fn exponential_fragments_are_refused_in_linear_time() {
        for levels in [12, 30, 64, 200] {
            let started = std::time::Instant::now();
            let refusal = check(&doubling(levels), &Variables::default(), None).unwrap_err();
            assert!(
                refusal
                    .message
                    .contains("fields once its fragments are expanded")
                    || refusal.message.contains("fragment spreads"),
                "{refusal:?}"
            );
            // no timing assertion: the sizes are computed, never expanded
            let _ = started.elapsed();
        }
        // a handful of levels is fine
        let (_, checked) = check(&doubling(4), &Variables::default(), None).unwrap();
        assert_eq!(checked.kind, Some(OperationType::Query));
        assert!(!checked.expensive);
    }

    #[test]
    fn counts_expanded_sizes_exactly() {
        let document = async_graphql::parser::parse_query(doubling(3)).unwrap();
        let mut walk = Walk {
            document: &document,
            memo: HashMap::new(),
            visiting: Vec::new(),
        };
        let op = document.operations.iter().next().unwrap().1;
        let size = walk.selection_set(&op.node.selection_set.node).unwrap();
        // 2^3 copies of `environments { id }`
        assert_eq!(size.fields, 16);
        assert_eq!(size.spreads, 1 + 2 + 4 + 8);
    }

    #[test]
    fn fragment_cycles_are_refused() {
        let query = "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }";
        let refusal = check(query, &Variables::default(), None).unwrap_err();
        assert!(refusal.message.contains("cycle"), "{refusal:?}");
    }

    #[test]
    fn expensive_fields_are_bounded_through_aliases_and_fragments() {
        let one = "{ verifyEventLog { ok } }";
        let (_, checked) = check(one, &Variables::default(), None).unwrap();
        assert!(checked.expensive);
        let two = "{ a: verifyEventLog { ok } b: verifyEventLog { ok } }";
        assert!(check(two, &Variables::default(), None)
            .unwrap_err()
            .message
            .contains("at most 1"));
        let spread = "{ ...V ...V } fragment V on Query { verifyEventLog { ok } }";
        assert!(check(spread, &Variables::default(), None).is_err());
        let replays: String = (0..11)
            .map(|n| format!("h{n}: eventHistory(aggregateType: \"incident\", aggregateId: \"i{n}\") {{ position }} "))
            .collect();
        assert!(
            check(&format!("{{ {replays} }}"), &Variables::default(), None)
                .unwrap_err()
                .message
                .contains("at most 10")
        );
        // a field of the same name below the root is not a root field
        let nested = "{ environments { id } }";
        assert!(
            !check(nested, &Variables::default(), None)
                .unwrap()
                .1
                .expensive
        );
    }

    #[test]
    fn nul_is_refused_in_arguments_variables_and_defaults() {
        let literal = "{ incidents(environmentId: \"a\\u0000b\") { nodes { id } } }";
        let refusal = check(literal, &Variables::default(), None).unwrap_err();
        assert_eq!(refusal.field.as_deref(), Some("environmentId"));
        let nested = "{ workflowMatrix(environmentIds: [\"ok\", \"a\\u0000\"]) { totalCount } }";
        assert_eq!(
            check(nested, &Variables::default(), None)
                .unwrap_err()
                .field
                .as_deref(),
            Some("environmentIds")
        );
        let variables = Variables::from_json(serde_json::json!({ "search": "x\u{0}y" }));
        let refusal = check(
            "query($search: String) { workflowMatrix(search: $search) { totalCount } }",
            &variables,
            None,
        )
        .unwrap_err();
        assert_eq!(refusal.field.as_deref(), Some("$search"));
        let deep =
            Variables::from_json(serde_json::json!({ "input": { "a": [ { "b": "\u{0}" } ] } }));
        assert_eq!(
            check("query($input: JSON) { environments { id } }", &deep, None)
                .unwrap_err()
                .field
                .as_deref(),
            Some("$input.a.b")
        );
        let default =
            "query($s: String = \"\\u0000\") { workflowMatrix(search: $s) { totalCount } }";
        assert!(check(default, &Variables::default(), None).is_err());
    }

    #[test]
    fn tokens_and_nesting_are_bounded_before_parsing() {
        let many = format!("{{ {} }}", "id ".repeat(MAX_TOKENS + 1));
        assert!(check(&many, &Variables::default(), None)
            .unwrap_err()
            .message
            .contains("tokens"));
        let deep = format!("{}{}", "{a".repeat(100_000), "}".repeat(100_000));
        assert!(check(&deep, &Variables::default(), None)
            .unwrap_err()
            .message
            .contains("recursion"));
        // brackets inside strings and comments do not count
        let quoted = format!(
            "{{ workflowMatrix(search: \"{}\") {{ totalCount }} }} # {}",
            "{".repeat(500),
            "[".repeat(500)
        );
        assert!(check(&quoted, &Variables::default(), None).is_ok());
        let block = format!(
            "{{ workflowMatrix(search: \"\"\"{}\"\"\") {{ totalCount }} }}",
            "(".repeat(500)
        );
        assert!(check(&block, &Variables::default(), None).is_ok());
    }

    #[test]
    fn the_chosen_operation_is_reported() {
        let document = "query A { environments { id } } mutation B { deactivateEnvironment(id: \"x\") { position } }";
        let (_, checked) = check(document, &Variables::default(), Some("B")).unwrap();
        assert_eq!(checked.kind, Some(OperationType::Mutation));
        let (_, checked) = check(document, &Variables::default(), None).unwrap();
        assert_eq!(checked.kind, None);
    }
}
#[cfg(test)]
mod extension_tests {
    /// Without the extension checking first, async-graphql's own parse step walks
    /// 2^30 fragment spreads (minutes of CPU) before anything refuses this.
    #[tokio::test]
    async fn the_extension_refuses_before_async_graphql_parses() {
        use futures::StreamExt;
        let schema = crate::graphql::schema(None);
        let mut query = String::from("query { ...F0 }\n");
        for level in 0..30 {
            query.push_str(&format!(
                "fragment F{level} on QueryRoot {{ ...F{next} ...F{next} }}\n",
                next = level + 1
            ));
        }
        query.push_str("fragment F30 on QueryRoot { environments { id } }\n");
        let response = schema.execute(query.clone()).await;
        assert!(format!("{:?}", response.errors).contains("once its fragments are expanded"));
        let response = schema.execute_stream(query).next().await.unwrap();
        assert!(format!("{:?}", response.errors).contains("once its fragments are expanded"));
        assert!(schema.execute("{ __typename }").await.errors.is_empty());
    }
}
