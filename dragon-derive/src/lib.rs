//! `#[derive(DragonModel)]`: makes a sea-orm model publish its committed changes.
//!
//! The derive stays thin: it implements `dragon_core::Publish` (route, published fields,
//! serialization) and an `ActiveModelBehavior` whose hooks call `dragon_core::model`'s.
//!
//! ```ignore
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
//! ```

use proc_macro::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Fields, LitStr, parse_macro_input};

#[proc_macro_derive(DragonModel, attributes(dragon))]
pub fn derive_dragon_model(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let mut route: Option<String> = None;
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
    let route = route.ok_or_else(|| {
        syn::Error::new_spanned(
            &input.ident,
            "DragonModel needs #[dragon(route = \"route-name\")]",
        )
    })?;

    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "DragonModel works on a struct",
        ));
    };
    let Fields::Named(named) = &data.fields else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "DragonModel needs named fields",
        ));
    };
    let mut published = Vec::new();
    for field in &named.named {
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
        if !skip {
            published.push(field.ident.clone().expect("named field"));
        }
    }
    let names: Vec<String> = published.iter().map(|i| i.to_string()).collect();
    let count = published.len();
    let model = &input.ident;
    let dc = quote!(::dragon_core);
    let orm = quote!(::dragon_core::__private::sea_orm);
    let json = quote!(::dragon_core::__private::serde_json);

    let hooks_impl = if user_hooks {
        quote!()
    } else {
        quote!(impl #dc::model::ModelHooks for #model {})
    };

    Ok(quote! {
        impl #dc::model::Publish for #model {
            const ROUTE: &'static str = #route;
            const FIELDS: &'static [&'static str] = &[#(#names),*];
            fn to_published(&self) -> #json::Map<::std::string::String, #json::Value> {
                let mut object = #json::Map::with_capacity(#count);
                #(
                    object.insert(
                        ::std::string::String::from(#names),
                        #json::to_value(&self.#published).unwrap_or(#json::Value::Null),
                    );
                )*
                object
            }
        }

        #hooks_impl

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
    })
}
