//! Long lists of small objects resolved in one pass.
//!
//! async-graphql resolves every object as a set of boxed field futures polled
//! through a `FuturesUnordered`, and, because the schema has an extension (the
//! [`super::guard`]), each field and each list item also goes through the extension
//! chain with a `ResolveInfo` (two registry lookups and a few type-name strings
//! built per field). For the matrix's 500 cells per page that machinery cost more
//! than reading the cells from the database (decision 60). [`InlineList`] resolves
//! the same selection the same way — the type's own `resolve_field` for each field,
//! fragments and `__typename` as async-graphql treats them, the same values — one
//! field after another inside one future, without the per-field extension hook
//! (none of the schema's extensions resolves fields; [`super::guard`] works on the
//! whole operation).
//!
//! When the request is answered by [`write_response`] (the HTTP handler puts
//! [`WrittenRaw`] in the request's data, unless the guard finds a response key that
//! async-graphql would merge: decision 71) and every selected field is given
//! plainly, the list is written as JSON text while it is resolved, with no value
//! tree at all (decision 67): the text travels in the response as a tagged
//! [`Value::Binary`], which `write_response` copies into the answer as it is. A
//! field with a selection of its own is written too when its type says how
//! ([`PlainFields::write_selected_field`]): the matrix's edges are written with
//! their rows and the rows' cells in one pass.

use std::borrow::Cow;

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{Field, Selection, SelectionSet};
use async_graphql::registry::Registry;
use async_graphql::resolver_utils::ContainerType;
use async_graphql::{
    ContextSelectionSet, Name, OutputType, Positioned, ServerError, ServerResult, Value,
};
use chrono::{DateTime, Utc};
use projections::json_str::JsonStr;

/// A list of `T` (an object type) typed as `[T!]!`, resolved item after item and
/// field after field.
pub struct InlineList<'a, T>(pub &'a [T]);

impl<T: ContainerType + PlainFields + Sync> OutputType for InlineList<'_, T> {
    fn type_name() -> Cow<'static, str> {
        <Vec<T> as OutputType>::type_name()
    }

    fn qualified_type_name() -> String {
        <Vec<T> as OutputType>::qualified_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        <Vec<T> as OutputType>::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        _field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        let Some(first) = self.0.first() else {
            return Ok(Value::List(Vec::new()));
        };
        // Every item is a `T`, so the selection expands to the same fields for all.
        let mut fields = Vec::new();
        collect_fields(ctx, ctx.item, first, &mut fields)?;
        if ctx.data_opt::<WrittenRaw>().is_some() {
            if let Some(text) = write_plain_list(ctx, self.0, &fields) {
                return Ok(Value::Binary(text.into()));
            }
        }
        let mut items = Vec::with_capacity(self.0.len());
        for (index, item) in self.0.iter().enumerate() {
            let ctx_item = ctx.with_index(index);
            let value = resolve_object(&ctx_item, item, &fields)
                .await
                .map_err(|error| ctx_item.set_error_path(error))?;
            items.push(value);
        }
        Ok(Value::List(items))
    }
}

/// Fields an object gives without being resolved: the value of a scalar or enum
/// field, exactly the value its resolver would give (`None` for any field it does
/// not give so, which is then resolved). [`InlineList`] asks it only for fields
/// with no arguments, no directives and no selection of their own.
pub trait PlainFields {
    fn plain_field(&self, name: &str) -> Option<Value>;

    /// Appends the JSON of what [`PlainFields::plain_field`] gives for `name`, byte
    /// for byte what serializing that value writes; false (nothing appended) for a
    /// field it does not give plainly.
    fn write_plain_field(&self, name: &str, out: &mut Vec<u8>) -> bool {
        match self.plain_field(name) {
            Some(value) => {
                write_value(&value, out);
                true
            }
            None => false,
        }
    }

    /// Appends the JSON of `field`, one with a selection of its own (and no
    /// arguments or directives), exactly what resolving it with that selection
    /// gives: for a field whose value is an object or list of objects that are
    /// themselves [`PlainFields`] ([`write_selected_object`],
    /// [`write_selected_list`]). False when it does not (the default); the text is
    /// then abandoned and the list resolved as values.
    fn write_selected_field(
        &self,
        _ctx: &ContextSelectionSet<'_>,
        _field: &Positioned<Field>,
        _out: &mut Vec<u8>,
    ) -> bool {
        false
    }
}

/// Request data: the response is written with [`write_response`], so lists may
/// be given as tagged JSON text.
pub struct WrittenRaw;

/// Starts every [`Value::Binary`] that holds JSON text to copy as it is. A NUL
/// byte never starts JSON text, and no field of the schema gives bytes.
const RAW_TAG: &[u8] = b"\0wfo-raw-json\0";

/// The list of `items`, each with `fields`, as tagged JSON text; `None` unless
/// every field is written plainly (see [`write_items`]).
fn write_plain_list<T: ContainerType + PlainFields>(
    ctx: &ContextSelectionSet<'_>,
    items: &[T],
    fields: &[&Positioned<Field>],
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(RAW_TAG.len() + 1024);
    out.extend_from_slice(RAW_TAG);
    write_items(ctx, items, fields, &mut out).then_some(out)
}

/// The response keys of `fields` as written before their values (`{"key":` and
/// `,"key":`); `None` when a key repeats (a repeated key merges, which the value
/// path does) or a field has arguments or directives (which only its resolver
/// knows what to do with).
fn written_keys(fields: &[&Positioned<Field>]) -> Option<Vec<Vec<u8>>> {
    let mut keys: Vec<Vec<u8>> = Vec::with_capacity(fields.len());
    for (index, field) in fields.iter().enumerate() {
        let node = &field.node;
        let key = node.response_key().node.as_str();
        if fields[..index]
            .iter()
            .any(|f| f.node.response_key().node.as_str() == key)
        {
            return None;
        }
        if node.name.node != "__typename"
            && !(node.arguments.is_empty() && node.directives.is_empty())
        {
            return None;
        }
        let mut written = Vec::with_capacity(key.len() + 4);
        written.push(if index == 0 { b'{' } else { b',' });
        write_str(key, &mut written);
        written.push(b':');
        keys.push(written);
    }
    (!keys.is_empty()).then_some(keys)
}

/// Appends `items`, each with `fields`, as a JSON list; false (the text then
/// abandoned) unless every field of every item is `__typename`, given plainly
/// ([`PlainFields::write_plain_field`]) or, with a selection of its own, written
/// ([`PlainFields::write_selected_field`]).
fn write_items<T: ContainerType + PlainFields>(
    ctx: &ContextSelectionSet<'_>,
    items: &[T],
    fields: &[&Positioned<Field>],
    out: &mut Vec<u8>,
) -> bool {
    let Some(keys) = written_keys(fields) else {
        return false;
    };
    out.push(b'[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        if !write_fields(ctx, item, fields, &keys, out) {
            return false;
        }
    }
    out.push(b']');
    true
}

/// Appends `item` with `fields` (their written `keys`) as a JSON object.
fn write_fields<T: ContainerType + PlainFields>(
    ctx: &ContextSelectionSet<'_>,
    item: &T,
    fields: &[&Positioned<Field>],
    keys: &[Vec<u8>],
    out: &mut Vec<u8>,
) -> bool {
    for (field, key) in fields.iter().zip(keys) {
        out.extend_from_slice(key);
        let name = field.node.name.node.as_str();
        let written = if name == "__typename" {
            write_str(&item.introspection_type_name(), out);
            true
        } else if field.node.selection_set.node.items.is_empty() {
            item.write_plain_field(name, out)
        } else {
            item.write_selected_field(ctx, field, out)
        };
        if !written {
            return false;
        }
    }
    out.push(b'}');
    true
}

/// For [`PlainFields::write_selected_field`]: a list field's `items` written with
/// `field`'s selection.
pub fn write_selected_list<T: ContainerType + PlainFields>(
    ctx: &ContextSelectionSet<'_>,
    items: &[T],
    field: &Positioned<Field>,
    out: &mut Vec<u8>,
) -> bool {
    let Some(first) = items.first() else {
        out.extend_from_slice(b"[]");
        return true;
    };
    let mut fields = Vec::new();
    if collect_fields(ctx, &field.node.selection_set, first, &mut fields).is_err() {
        return false;
    }
    write_items(ctx, items, &fields, out)
}

/// For [`PlainFields::write_selected_field`]: an object field's `item` written
/// with `field`'s selection.
pub fn write_selected_object<T: ContainerType + PlainFields>(
    ctx: &ContextSelectionSet<'_>,
    item: &T,
    field: &Positioned<Field>,
    out: &mut Vec<u8>,
) -> bool {
    let mut fields = Vec::new();
    if collect_fields(ctx, &field.node.selection_set, item, &mut fields).is_err() {
        return false;
    }
    match written_keys(&fields) {
        Some(keys) => write_fields(ctx, item, &fields, &keys, out),
        None => false,
    }
}

/// An enum value as JSON: its GraphQL name, what `enum_value` gives.
pub fn write_enum<T: async_graphql::resolver_utils::EnumType>(value: T, out: &mut Vec<u8>) {
    match T::items().iter().find(|item| item.value == value) {
        Some(item) => write_str(item.name, out),
        None => out.extend_from_slice(b"null"),
    }
}

/// `text` as a JSON string, escaped as serde escapes it.
pub fn write_str(text: &str, out: &mut Vec<u8>) {
    // Most strings here (ids, hashes, names) need no escape: one pass without
    // branches finds out, and they are copied whole.
    let escapes = text.bytes().fold(false, |any, b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if escapes {
        // writing to a Vec cannot fail
        let _ = serde_json::to_writer(&mut *out, text);
    } else {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// A string read out of stored JSON ([`JsonStr`]) as serde writes it: the stored
/// literal as it is when it has no escape (then serde writes the same bytes),
/// otherwise decoded and written again.
pub fn write_json_str(text: JsonStr<'_>, out: &mut Vec<u8>) {
    if text.is_plain() {
        out.extend_from_slice(text.json().as_bytes());
    } else {
        write_str(&text.get(), out);
    }
}

/// A time as JSON, the string async-graphql's `DateTime<Utc>` scalar gives
/// (`to_rfc3339`: seconds, then as many fraction digits as the time needs, 3, 6 or
/// 9, then `+00:00`), written without formatting machinery.
pub fn write_time(at: DateTime<Utc>, out: &mut Vec<u8>) {
    use chrono::{Datelike, Timelike};
    // the UTC fields as they are (the local view would add a zero offset to each)
    let utc = at.naive_utc();
    let year = utc.year();
    let nano = utc.nanosecond();
    if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
        // a signed year or a leap second: chrono's own way
        return write_str(&at.to_rfc3339(), out);
    }
    fn digits(value: u32, width: u32, out: &mut Vec<u8>) {
        for place in (0..width).rev() {
            out.push(b'0' + (value / 10u32.pow(place) % 10) as u8);
        }
    }
    out.reserve(34);
    out.push(b'"');
    digits(year as u32, 4, out);
    out.push(b'-');
    digits(utc.month(), 2, out);
    out.push(b'-');
    digits(utc.day(), 2, out);
    out.push(b'T');
    digits(utc.hour(), 2, out);
    out.push(b':');
    digits(utc.minute(), 2, out);
    out.push(b':');
    digits(utc.second(), 2, out);
    if nano != 0 {
        out.push(b'.');
        if nano % 1_000_000 == 0 {
            digits(nano / 1_000_000, 3, out);
        } else if nano % 1_000 == 0 {
            digits(nano / 1_000, 6, out);
        } else {
            digits(nano, 9, out);
        }
    }
    out.extend_from_slice(b"+00:00\"");
}

/// `value` as JSON, as serde writes it, except tagged text, copied as it is.
pub fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Boolean(true) => out.extend_from_slice(b"true"),
        Value::Boolean(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => {
            let _ = serde_json::to_writer(&mut *out, number);
        }
        Value::String(text) => write_str(text, out),
        Value::Enum(name) => write_str(name, out),
        Value::Binary(bytes) => match bytes.strip_prefix(RAW_TAG) {
            Some(text) => out.extend_from_slice(text),
            None => {
                let _ = serde_json::to_writer(&mut *out, value);
            }
        },
        Value::List(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Value::Object(object) => write_object(object.iter().map(|(k, v)| (k.as_str(), v)), out),
    }
}

/// `{"key":value,…}` of `members`, in their order.
fn write_object<'a>(members: impl Iterator<Item = (&'a str, &'a Value)>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (index, (key, value)) in members.enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_str(key, out);
        out.push(b':');
        write_value(value, out);
    }
    out.push(b'}');
}

/// `response` as JSON, the same text as `serde_json::to_vec(response)` (the same
/// members in the same order), with the tagged JSON text of [`InlineList`] copied
/// in place.
pub fn write_response(response: &async_graphql::Response) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(b"{\"data\":");
    write_value(&response.data, &mut out);
    if !response.extensions.is_empty() {
        out.extend_from_slice(b",\"extensions\":");
        write_object(
            response.extensions.iter().map(|(k, v)| (k.as_str(), v)),
            &mut out,
        );
    }
    if !response.errors.is_empty() {
        out.extend_from_slice(b",\"errors\":");
        serde_json::to_writer(&mut out, &response.errors)?;
    }
    out.push(b'}');
    Ok(out)
}

/// The fields `selection` asks of `root`, in order, fragments expanded as
/// async-graphql's `Fields::add_set` expands them (`@skip`/`@include` are gone
/// before execution).
fn collect_fields<'a, T: ContainerType>(
    ctx: &ContextSelectionSet<'a>,
    selection: &'a Positioned<SelectionSet>,
    root: &T,
    fields: &mut Vec<&'a Positioned<Field>>,
) -> ServerResult<()> {
    for item in &selection.node.items {
        let (condition, set) = match &item.node {
            Selection::Field(field) => {
                fields.push(field);
                continue;
            }
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                let Some(fragment) = ctx.query_env.fragments.get(name) else {
                    return Err(ServerError::new(
                        format!(r#"Unknown fragment "{name}"."#),
                        Some(spread.pos),
                    ));
                };
                (
                    Some(&fragment.node.type_condition),
                    &fragment.node.selection_set,
                )
            }
            Selection::InlineFragment(fragment) => (
                fragment.node.type_condition.as_ref(),
                &fragment.node.selection_set,
            ),
        };
        let condition = condition.map(|c| c.node.on.node.as_str());
        let own = root.introspection_type_name();
        let applies = condition.is_none_or(|c| {
            own == c
                || T::type_name() == c
                || ctx
                    .schema_env
                    .registry
                    .implements
                    .get(&*own)
                    .is_some_and(|interfaces| interfaces.contains(c))
        });
        if applies {
            collect_fields(ctx, set, root, fields)?;
        }
    }
    Ok(())
}

/// Merges a field's value into the object as async-graphql does (a repeated response
/// key merges objects and lists of objects; otherwise the first value stays).
fn insert_value(target: &mut IndexMap<Name, Value>, name: Name, value: Value) {
    use async_graphql::indexmap::map::Entry;
    match (target.entry(name), value) {
        (Entry::Vacant(vacant), value) => {
            vacant.insert(value);
        }
        (Entry::Occupied(mut occupied), value) => match (occupied.get_mut(), value) {
            (Value::Object(into), Value::Object(from)) => {
                for (key, value) in from {
                    insert_value(into, key, value);
                }
            }
            (Value::List(into), Value::List(from)) => {
                for (into, from) in into.iter_mut().zip(from) {
                    if let (Value::Object(into), Value::Object(from)) = (into, from) {
                        for (key, value) in from {
                            insert_value(into, key, value);
                        }
                    }
                }
            }
            _ => {}
        },
    }
}

/// One object: its selected `fields` resolved one after another.
async fn resolve_object<T: ContainerType + PlainFields>(
    ctx: &ContextSelectionSet<'_>,
    root: &T,
    fields: &[&Positioned<Field>],
) -> ServerResult<Value> {
    let mut object = IndexMap::with_capacity(fields.len());
    for field in fields {
        let key = field.node.response_key().node.clone();
        if field.node.name.node == "__typename" {
            let name = root.introspection_type_name().into_owned();
            insert_value(&mut object, key, Value::String(name));
            continue;
        }
        let plain = field.node.arguments.is_empty()
            && field.node.directives.is_empty()
            && field.node.selection_set.node.items.is_empty();
        if let Some(value) = plain
            .then(|| root.plain_field(&field.node.name.node))
            .flatten()
        {
            insert_value(&mut object, key, value);
            continue;
        }
        let ctx_field = ctx.with_field(field);
        match root.resolve_field(&ctx_field).await {
            Ok(value) => insert_value(&mut object, key, value.unwrap_or_default()),
            Err(error) => ctx.add_error(error),
        }
    }
    Ok(if object.is_empty() {
        Value::Null
    } else {
        Value::Object(object)
    })
}
