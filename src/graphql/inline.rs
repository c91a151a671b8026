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

use std::borrow::Cow;

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{Field, Selection, SelectionSet};
use async_graphql::registry::Registry;
use async_graphql::resolver_utils::ContainerType;
use async_graphql::{
    ContextSelectionSet, Name, OutputType, Positioned, ServerError, ServerResult, Value,
};

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
