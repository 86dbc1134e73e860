//! `#[transform]` for switchyard-guest. Use it through `switchyard_guest::transform`.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{parse_macro_input, FnArg, ItemFn, Path};

/// Export the annotated function as the module's `transform` (and the
/// optional `init = path` hook as its `init`). See `switchyard_guest`.
#[proc_macro_attribute]
pub fn transform(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut init: Option<Path> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("init") {
            if init.is_some() {
                return Err(meta.error("`init` given twice"));
            }
            init = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            Err(meta.error("unknown option; expected `init = path::to::fn`"))
        }
    });
    parse_macro_input!(attr with parser);
    let func = parse_macro_input!(item as ItemFn);
    match expand(init, func) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(init: Option<Path>, func: ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let sig = &func.sig;
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new(
            a.span(),
            "#[transform] functions cannot be async",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "#[transform] functions cannot be generic",
        ));
    }
    if let Some(FnArg::Receiver(r)) = sig.inputs.first() {
        return Err(syn::Error::new(
            r.span(),
            "#[transform] must be a free function, not a method",
        ));
    }
    let name = &sig.ident;
    let call = match sig.inputs.len() {
        1 => quote_spanned!(sig.inputs.span()=> |ev, _cfg: &::switchyard_guest::Config| #name(ev)),
        2 => quote_spanned!(sig.inputs.span()=> |ev, cfg: &::switchyard_guest::Config| #name(ev, cfg)),
        _ => {
            return Err(syn::Error::new(
                sig.inputs.span(),
                "#[transform] expects `fn(ev: Event, cfg: &Config) -> Result<Vec<Output>, Error>` (the `cfg` argument is optional)",
            ))
        }
    };
    let hook = match &init {
        Some(p) => quote_spanned!(p.span()=> |cfg: &::switchyard_guest::Config| #p(cfg)),
        None => quote!(|_: &::switchyard_guest::Config| ::core::result::Result::<
            (),
            ::std::string::String,
        >::Ok(())),
    };
    let ty = syn::Ident::new("__SwitchyardTransform", Span::call_site());
    Ok(quote! {
        #func

        const _: () = {
            struct #ty;
            impl ::switchyard_guest::__private::Guest for #ty {
                fn init(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    ::switchyard_guest::__private::init(config, #hook)
                }
                fn transform(
                    event: ::switchyard_guest::__private::WitEvent,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<::switchyard_guest::__private::WitOutput>,
                    ::switchyard_guest::__private::WitError,
                > {
                    ::switchyard_guest::__private::transform(event, #call)
                }
            }
            ::switchyard_guest::__private::bindings::__export_transformer!(
                #ty with_types_in ::switchyard_guest::__private::bindings
            );
        };
    })
}
