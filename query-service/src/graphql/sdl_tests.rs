//! The schema the code serves, against the checked-in SDL and the contract.

use std::collections::BTreeMap;

use async_graphql::parser::parse_schema;
use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};

const CHECKED_IN: &str = include_str!("../../../schema/api.graphql");
const CONTRACT: &str = include_str!("../../../schema/contract.graphql");

#[test]
fn the_checked_in_sdl_is_what_the_code_serves() {
    let served = super::sdl();
    if std::env::var_os("UPDATE_SDL").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema/api.graphql");
        std::fs::write(path, &served).expect("write schema/api.graphql");
        return;
    }
    assert!(
        served == CHECKED_IN,
        "schema/api.graphql is out of date with the code: run `./dev sdl` and review the diff"
    );
}

/// Type name -> field (or input field, or enum value) -> its type and arguments.
fn shape(sdl: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let document = parse_schema(sdl).expect("valid SDL");
    let mut types = BTreeMap::new();
    for definition in document.definitions {
        let TypeSystemDefinition::Type(definition) = definition else {
            continue;
        };
        let definition = definition.node;
        let mut members = BTreeMap::new();
        match definition.kind {
            TypeKind::Object(object) => {
                for field in object.fields {
                    let field = field.node;
                    let arguments: Vec<String> = field
                        .arguments
                        .iter()
                        .map(|argument| {
                            format!("{}: {}", argument.node.name.node, argument.node.ty.node)
                        })
                        .collect();
                    members.insert(
                        field.name.node.to_string(),
                        format!("({}) {}", arguments.join(", "), field.ty.node),
                    );
                }
            }
            TypeKind::Interface(interface) => {
                for field in interface.fields {
                    members.insert(
                        field.node.name.node.to_string(),
                        field.node.ty.node.to_string(),
                    );
                }
            }
            TypeKind::InputObject(input) => {
                for field in input.fields {
                    members.insert(
                        field.node.name.node.to_string(),
                        field.node.ty.node.to_string(),
                    );
                }
            }
            TypeKind::Enum(enumeration) => {
                for value in enumeration.values {
                    members.insert(value.node.value.node.to_string(), String::new());
                }
            }
            TypeKind::Scalar | TypeKind::Union(_) => {}
        }
        types.insert(definition.name.node.to_string(), members);
    }
    types
}

#[test]
fn the_served_schema_has_everything_the_contract_promises() {
    let served = shape(&super::sdl());
    let mut missing = Vec::new();
    for (type_name, members) in shape(CONTRACT) {
        let Some(served_members) = served.get(&type_name) else {
            missing.push(format!("type {type_name}"));
            continue;
        };
        for (member, signature) in members {
            match served_members.get(&member) {
                None => missing.push(format!("{type_name}.{member}")),
                Some(served_signature) if *served_signature != signature => missing.push(format!(
                    "{type_name}.{member}: contract {signature}, served {served_signature}"
                )),
                Some(_) => {}
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the served schema breaks the contract:\n{}",
        missing.join("\n")
    );
}
