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
    let mut batch: Option<Path> = None;
    let mut batch_response: Option<Path> = None;
    let parser = syn::meta::parser(|meta| {
        let slot = if meta.path.is_ident("init") {
            &mut init
        } else if meta.path.is_ident("batch") {
            &mut batch
        } else if meta.path.is_ident("batch_response") {
            &mut batch_response
        } else {
            return Err(meta.error(
                "unknown option; expected `init = path`, `batch = path` or `batch_response = path`",
            ));
        };
        if slot.is_some() {
            return Err(meta.error("option given twice"));
        }
        *slot = Some(meta.value()?.parse()?);
        Ok(())
    });
    parse_macro_input!(attr with parser);
    let func = parse_macro_input!(item as ItemFn);
    if batch.is_none() {
        if let Some(r) = &batch_response {
            return syn::Error::new(r.span(), "`batch_response` needs `batch`")
                .to_compile_error()
                .into();
        }
    }
    match expand(init, batch.map(|b| (b, batch_response)), func) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(
    init: Option<Path>,
    batch: Option<(Path, Option<Path>)>,
    func: ItemFn,
) -> syn::Result<proc_macro2::TokenStream> {
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
    let guest_fns = quote! {
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
    };
    let Some((batch, response)) = batch else {
        return Ok(quote! {
            #func

            const _: () = {
                struct #ty;
                impl ::switchyard_guest::__private::Guest for #ty {
                    #guest_fns
                }
                ::switchyard_guest::__private::bindings::__export_transformer!(
                    #ty with_types_in ::switchyard_guest::__private::bindings
                );
            };
        });
    };
    let response = match response {
        Some(p) => quote_spanned!(p.span()=> #p),
        // Without one, the HTTP status decides for every item.
        None => quote!(
            |_: &::switchyard_guest::Request, _: usize, _: u16, _: &[u8]| {
                ::std::vec::Vec::<::switchyard_guest::ItemOutcome>::new()
            }
        ),
    };
    Ok(quote! {
        #func

        const _: () = {
            struct #ty;
            impl ::switchyard_guest::__private::Guest for #ty {
                #guest_fns
            }
            impl ::switchyard_guest::__private::BatchGuest for #ty {
                fn transform_batch(
                    events: ::std::vec::Vec<::switchyard_guest::__private::WitEvent>,
                ) -> ::core::result::Result<
                    ::switchyard_guest::__private::WitBatch,
                    ::switchyard_guest::__private::WitError,
                > {
                    ::switchyard_guest::__private::transform_batch(events, #batch)
                }
                fn batch_response(
                    request: ::switchyard_guest::__private::WitRequest,
                    items: u32,
                    status: u16,
                    body: ::std::vec::Vec<u8>,
                ) -> ::std::vec::Vec<::switchyard_guest::__private::WitItemOutcome> {
                    ::switchyard_guest::__private::batch_response(request, items, status, body, #response)
                }
            }
            ::switchyard_guest::__private::bindings::__export_transformer!(
                #ty with_types_in ::switchyard_guest::__private::bindings
            );
            ::switchyard_guest::__private::batch_bindings::__export_batch_transformer!(
                #ty with_types_in ::switchyard_guest::__private::batch_bindings
            );
        };
    })
}
