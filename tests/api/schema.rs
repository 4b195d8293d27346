//! schema.graphql is generated from the code; clients generate theirs from the file.

use async_graphql::Positioned;
use async_graphql::parser::parse_schema;
use async_graphql::parser::types::{InputValueDefinition, TypeKind, TypeSystemDefinition};

#[test]
fn checked_in_schema_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    let generated = onramp::graphql::sdl();
    assert!(
        on_disk == generated,
        "schema.graphql is out of date with the code. Regenerate it with:\n\n    cargo run -- schema > schema.graphql\n"
    );
}

/// Directives the GraphQL specification defines: their arguments are described there.
const SPEC_DIRECTIVES: [&str; 5] = ["include", "skip", "deprecated", "specifiedBy", "oneOf"];

fn described(description: &Option<Positioned<String>>) -> bool {
    description.as_ref().is_some_and(|d| !d.node.trim().is_empty())
}

fn undescribed_inputs(owner: &str, inputs: &[Positioned<InputValueDefinition>], missing: &mut Vec<String>) {
    for input in inputs {
        if !described(&input.node.description) {
            missing.push(format!("{owner}({}:)", input.node.name.node));
        }
    }
}

/// Every element a client developer (or a code generator's doc comments) reads: types,
/// fields, arguments, input fields and enum values.
fn undescribed(sdl: &str) -> Vec<String> {
    let document = parse_schema(sdl).expect("the SDL parses");
    let mut missing = Vec::new();
    for definition in &document.definitions {
        match definition {
            TypeSystemDefinition::Schema(_) => {}
            TypeSystemDefinition::Directive(directive) => {
                let name = &directive.node.name.node;
                if SPEC_DIRECTIVES.contains(&name.as_str()) {
                    continue;
                }
                if !described(&directive.node.description) {
                    missing.push(format!("@{name}"));
                }
                undescribed_inputs(&format!("@{name}"), &directive.node.arguments, &mut missing);
            }
            TypeSystemDefinition::Type(ty) => {
                let ty = &ty.node;
                let name = ty.name.node.as_str();
                if !described(&ty.description) {
                    missing.push(name.to_string());
                }
                let fields = match &ty.kind {
                    TypeKind::Object(object) => &object.fields,
                    TypeKind::Interface(interface) => &interface.fields,
                    TypeKind::Enum(enumeration) => {
                        for value in &enumeration.values {
                            if !described(&value.node.description) {
                                missing.push(format!("{name}.{}", value.node.value.node));
                            }
                        }
                        continue;
                    }
                    TypeKind::InputObject(input) => {
                        for field in &input.fields {
                            if !described(&field.node.description) {
                                missing.push(format!("{name}.{}", field.node.name.node));
                            }
                        }
                        continue;
                    }
                    TypeKind::Scalar | TypeKind::Union(_) => continue,
                };
                for field in fields {
                    let field_name = format!("{name}.{}", field.node.name.node);
                    if !described(&field.node.description) {
                        missing.push(field_name.clone());
                    }
                    undescribed_inputs(&field_name, &field.node.arguments, &mut missing);
                }
            }
        }
    }
    missing
}

#[test]
fn every_schema_element_is_described() {
    let missing = undescribed(&onramp::graphql::sdl());
    assert!(
        missing.is_empty(),
        "{} schema elements have no description (add `///` doc comments or `desc = \"...\"`):\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
}

#[test]
fn the_description_check_finds_what_is_missing() {
    let sdl = r#"
        "A thing." type Thing { "Described." a(x: Int): Int  b("Described." y: Int): Int }
        type Bare { "Described." c: Int }
        "Choice." enum Choice { "Described." ONE TWO }
        "Input." input Filter { "Described." d: Int e: Int }
        "Described." scalar Stamp
        scalar Naked
        directive @skip(if: Boolean!) on FIELD
        directive @mine(z: Int) on FIELD
    "#;
    assert_eq!(
        undescribed(sdl),
        ["Thing.a(x:)", "Thing.b", "Bare", "Choice.TWO", "Filter.e", "Naked", "@mine", "@mine(z:)"]
    );
}

#[test]
fn custom_scalars_name_their_specification() {
    let sdl = onramp::graphql::sdl();
    for (scalar, url) in [
        ("DateTime", "https://datatracker.ietf.org/doc/html/rfc3339"),
        ("JSON", "https://www.ecma-international.org/publications-and-standards/standards/ecma-404/"),
    ] {
        let line = format!("scalar {scalar} @specifiedBy(url: \"{url}\")");
        assert!(sdl.contains(&line), "schema.graphql lacks `{line}`");
    }
    assert!(!sdl.contains("DateTime<Utc>"), "a Rust type name leaks into the schema");
}
