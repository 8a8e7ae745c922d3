//! `#[derive(DragonModel)]`: makes a sea-orm model publish its committed changes.
//!
//! The derive stays thin: it implements `dragon_core::Publish` (route, published fields,
//! serialization) and an `ActiveModelBehavior` whose hooks call `dragon_core::model`'s.
//!
//! ```
//! use dragon_core::{DragonModel, Publish};
//! use sea_orm::entity::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize, DragonModel)]
//! #[sea_orm(table_name = "todo_item")]
//! #[dragon(route = "todo-item")]          // add `hooks` to implement ModelHooks yourself
//! pub struct Model {
//!     #[sea_orm(primary_key)]
//!     pub id: i32,
//!     pub text: String,
//!     #[dragon(skip)]                      // stored, never published
//!     pub secret: String,
//! }
//!
//! #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//! pub enum Relation {}
//!
//! assert_eq!(Model::ROUTE, "todo-item");
//! assert_eq!(Model::FIELDS, ["id", "text"]);
//! let row = Model { id: 1, text: "milk".into(), secret: "hidden".into() };
//! assert_eq!(serde_json::Value::Object(row.to_published()),
//!            serde_json::json!({"id": 1, "text": "milk"}));
//! ```
//!
//! A model without a route, or anything but a struct with named fields, is refused at
//! compile time with a message that says what is missing (the unit tests below check each
//! message):
//!
//! ```compile_fail
//! # use sea_orm::entity::prelude::*;
//! # use serde::{Deserialize, Serialize};
//! #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize, dragon_core::DragonModel)]
//! #[sea_orm(table_name = "todo_item")]
//! pub struct Model {                       // error: DragonModel needs #[dragon(route = "...")]
//!     #[sea_orm(primary_key)]
//!     pub id: i32,
//! }
//! # #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//! # pub enum Relation {}
//! ```
//!
//! ```compile_fail
//! # use sea_orm::entity::prelude::*;
//! # use serde::{Deserialize, Serialize};
//! #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize, dragon_core::DragonModel)]
//! #[sea_orm(table_name = "todo_item")]
//! #[dragon(route = "todo-item")]
//! pub struct Model {
//!     #[sea_orm(primary_key)]
//!     pub id: i32,
//!     #[dragon(hidden)]                    // error: expected `skip`
//!     pub secret: String,
//! }
//! # #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//! # pub enum Relation {}
//! ```

#![warn(missing_docs)]
use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::{Data, DeriveInput, Field, Fields, Ident, LitStr, parse_macro_input};

/// Derives `dragon_core::Publish` and an `ActiveModelBehavior` for a sea-orm `Model`, so its
/// committed changes are published on `#[dragon(route = "...")]`. `#[dragon(skip)]` keeps a
/// field unpublished; `#[dragon(hooks)]` leaves `ModelHooks` to the app. See the crate docs.
#[proc_macro_derive(DragonModel, attributes(dragon))]
pub fn derive_dragon_model(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

fn expand(input: &DeriveInput) -> syn::Result<Tokens> {
    Model::parse(input).map(|model| model.expand())
}

/// A model as the attributes describe it, checked before any code is generated.
struct Model<'a> {
    ident: &'a Ident,
    /// `#[dragon(route = "...")]`.
    route: String,
    /// `#[dragon(hooks)]`: the app implements `ModelHooks` itself.
    user_hooks: bool,
    /// The fields without `#[dragon(skip)]`, in declaration order.
    published: Vec<&'a Ident>,
}

impl<'a> Model<'a> {
    fn parse(input: &'a DeriveInput) -> syn::Result<Self> {
        let mut route = None;
        let mut user_hooks = false;
        for attr in input.attrs.iter().filter(|a| a.path().is_ident("dragon")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("route") {
                    route = Some(meta.value()?.parse::<LitStr>()?.value());
                    Ok(())
                } else if meta.path.is_ident("hooks") {
                    user_hooks = true;
                    Ok(())
                } else {
                    Err(meta.error("expected `route = \"...\"` or `hooks`"))
                }
            })?;
        }
        let refuse = |message: &str| syn::Error::new_spanned(&input.ident, message);
        let route =
            route.ok_or_else(|| refuse("DragonModel needs #[dragon(route = \"route-name\")]"))?;
        let Data::Struct(data) = &input.data else {
            return Err(refuse("DragonModel works on a struct"));
        };
        let Fields::Named(named) = &data.fields else {
            return Err(refuse("DragonModel needs named fields"));
        };
        let mut published = Vec::new();
        for field in &named.named {
            if !is_skipped(field)? {
                published.push(field.ident.as_ref().expect("a named field has a name"));
            }
        }
        Ok(Model {
            ident: &input.ident,
            route,
            user_hooks,
            published,
        })
    }

    fn expand(&self) -> Tokens {
        let publish = self.publish_impl();
        let hooks = self.hooks_impl();
        let behavior = self.behavior_impl();
        quote! { #publish #hooks #behavior }
    }

    /// `Publish`: the route, the published fields and the object clients see.
    fn publish_impl(&self) -> Tokens {
        let Model {
            ident,
            route,
            published,
            ..
        } = self;
        let names: Vec<String> = published.iter().map(|i| i.to_string()).collect();
        let count = published.len();
        let json = quote!(::dragon_core::__private::serde_json);
        quote! {
            #[automatically_derived]
            impl ::dragon_core::model::Publish for #ident {
                const ROUTE: &'static str = #route;
                const FIELDS: &'static [&'static str] = &[#(#names),*];
                fn to_published(&self) -> #json::Map<::std::string::String, #json::Value> {
                    let mut object = #json::Map::with_capacity(#count);
                    #(
                        object.insert(
                            ::std::string::String::from(#names),
                            ::dragon_core::__private::published_value(#route, #names, &self.#published),
                        );
                    )*
                    object
                }
            }
        }
    }

    /// `ModelHooks` with every default, unless the app writes its own.
    fn hooks_impl(&self) -> Tokens {
        if self.user_hooks {
            return quote!();
        }
        let ident = self.ident;
        quote! {
            #[automatically_derived]
            impl ::dragon_core::model::ModelHooks for #ident {}
        }
    }

    /// sea-orm's `ActiveModelBehavior`, each hook handed to `dragon_core::model`'s.
    fn behavior_impl(&self) -> Tokens {
        let model = self.ident;
        let dc = quote!(::dragon_core);
        let orm = quote!(::dragon_core::__private::sea_orm);
        quote! {
            #[automatically_derived]
            #[::dragon_core::__private::async_trait]
            impl #orm::ActiveModelBehavior for ActiveModel {
                async fn before_save<C>(self, db: &C, insert: bool) -> ::std::result::Result<Self, #orm::DbErr>
                where
                    C: #orm::ConnectionTrait,
                {
                    #dc::model::before_save::<#model, C>(self, db, insert).await
                }

                async fn after_save<C>(
                    model: #model,
                    db: &C,
                    insert: bool,
                ) -> ::std::result::Result<#model, #orm::DbErr>
                where
                    C: #orm::ConnectionTrait,
                {
                    #dc::model::after_save::<#model, C>(model, db, insert).await
                }

                async fn before_delete<C>(self, db: &C) -> ::std::result::Result<Self, #orm::DbErr>
                where
                    C: #orm::ConnectionTrait,
                {
                    #dc::model::before_delete::<#model, C>(self, db).await
                }

                async fn after_delete<C>(self, db: &C) -> ::std::result::Result<Self, #orm::DbErr>
                where
                    C: #orm::ConnectionTrait,
                {
                    #dc::model::after_delete::<#model, C>(self, db).await
                }
            }
        }
    }
}

/// Whether a field is marked `#[dragon(skip)]` (stored, never published).
fn is_skipped(field: &Field) -> syn::Result<bool> {
    let mut skip = false;
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("dragon")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                skip = true;
                Ok(())
            } else {
                Err(meta.error("expected `skip`"))
            }
        })?;
    }
    Ok(skip)
}

#[cfg(test)]
mod tests {
    use super::expand;
    use syn::parse_quote;

    fn refusal(input: syn::DeriveInput) -> String {
        match expand(&input) {
            Ok(_) => panic!("expected the derive to refuse this input"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn a_model_without_a_route_is_refused() {
        let msg = refusal(parse_quote! {
            struct Model { id: i32 }
        });
        assert_eq!(msg, "DragonModel needs #[dragon(route = \"route-name\")]");
    }

    #[test]
    fn only_structs_with_named_fields_are_accepted() {
        let msg = refusal(parse_quote! {
            #[dragon(route = "r")]
            enum Model { A }
        });
        assert_eq!(msg, "DragonModel works on a struct");
        let msg = refusal(parse_quote! {
            #[dragon(route = "r")]
            struct Model(i32);
        });
        assert_eq!(msg, "DragonModel needs named fields");
    }

    #[test]
    fn unknown_options_are_refused_with_what_is_expected() {
        let msg = refusal(parse_quote! {
            #[dragon(route = "r", table = "x")]
            struct Model { id: i32 }
        });
        assert_eq!(msg, "expected `route = \"...\"` or `hooks`");
        let msg = refusal(parse_quote! {
            #[dragon(route = "r")]
            struct Model { #[dragon(hidden)] id: i32 }
        });
        assert_eq!(msg, "expected `skip`");
        let msg = refusal(parse_quote! {
            #[dragon(route = 7)]
            struct Model { id: i32 }
        });
        assert_eq!(msg, "expected string literal");
    }

    #[test]
    fn skipped_fields_are_not_published_and_hooks_are_left_to_the_user() {
        let out = expand(&parse_quote! {
            #[dragon(route = "todo-item", hooks)]
            struct Model { id: i32, text: String, #[dragon(skip)] secret: String }
        })
        .expect("accepted")
        .to_string();
        assert!(
            out.contains(r#"const FIELDS : & 'static [& 'static str] = & ["id" , "text"]"#),
            "{out}"
        );
        assert!(!out.contains("secret"), "{out}");
        assert!(!out.contains("ModelHooks for Model"), "{out}");
    }
}
