//! The `#[task]` attribute of `wasmq-sdk`. Use it through `wasmq_sdk::task`.
//!
//! The macro only checks the signature and picks a codec for each side; everything
//! that runs at task time lives in `wasmq_sdk::__private`, where it is plain Rust.

mod signature;

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use signature::{Codec, TaskSignature};

/// See `wasmq_sdk::task`.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = TokenStream2::from(item);
    match expand(attr.into(), item.clone()) {
        Ok(tokens) => tokens.into(),
        Err(error) => with_error(error, item).into(),
    }
}

/// The error, plus the item unchanged and a placeholder `main`, so the compiler reports
/// only the signature problem instead of also "`main` function not found" and errors
/// from code that uses the function.
fn with_error(error: syn::Error, item: TokenStream2) -> TokenStream2 {
    let defines_main = matches!(syn::parse2::<syn::ItemFn>(item.clone()), Ok(f) if f.sig.ident == "main");
    let placeholder = (!defines_main).then(|| {
        quote!(
            fn main() {}
        )
    });
    let error = error.into_compile_error();
    quote!(#error #item #placeholder)
}

fn expand(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    if !attr.is_empty() {
        return Err(syn::Error::new(attr.span(), "#[task] takes no arguments"));
    }
    let item: syn::Item = syn::parse2(item)?;
    let syn::Item::Fn(function) = item else {
        return Err(syn::Error::new(item.span(), "#[task] must be applied to a function: `fn name(input: In) -> Result<Out, E>`"));
    };
    let sig = TaskSignature::parse(&function.sig)?;

    let name = &function.sig.ident;
    let in_codec = codec_path(sig.input_codec, sig.input.span());
    let out_codec = codec_path(sig.output_codec, sig.output.span());
    // Naming `E` in the call makes a missing `Display` impl point at the error type.
    let error = match sig.error {
        Some(ty) if !matches!(ty, syn::Type::ImplTrait(_) | syn::Type::Infer(_)) => quote!(#ty),
        _ => quote!(_),
    };
    let call = if sig.fallible {
        quote!(#name)
    } else {
        // Mixed-site hygiene: the closure's `input` cannot clash with a task named `input`.
        quote_spanned!(proc_macro2::Span::mixed_site()=>
            |input| ::core::result::Result::<_, ::core::convert::Infallible>::Ok(#name(input)))
    };

    Ok(quote! {
        #function

        // Under `cargo test` the harness supplies its own `main`, so this one is unused
        // there; allowing dead code also keeps the task function from being reported.
        #[allow(dead_code)]
        fn main() {
            ::wasmq_sdk::__private::run::<#in_codec, #out_codec, _, _, #error>(#call)
        }
    })
}

/// The codec type, spanned at the user's type so unsatisfied bounds point there.
fn codec_path(codec: Codec, span: proc_macro2::Span) -> TokenStream2 {
    match codec {
        Codec::Bytes => quote_spanned!(span=> ::wasmq_sdk::__private::BytesCodec),
        Codec::Text => quote_spanned!(span=> ::wasmq_sdk::__private::TextCodec),
        Codec::Json => quote_spanned!(span=> ::wasmq_sdk::__private::JsonCodec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(item: TokenStream2) -> String {
        expand(TokenStream2::new(), item).unwrap_err().to_string()
    }

    #[test]
    fn expands_fallible_json_task() {
        let out = expand(
            quote!(),
            quote!(
                fn t(i: Input) -> Result<Output, Error> {
                    todo!()
                }
            ),
        )
        .unwrap()
        .to_string();
        assert!(out.contains("fn t (i : Input)"), "{out}");
        assert!(out.contains("JsonCodec , :: wasmq_sdk :: __private :: JsonCodec"), "{out}");
        assert!(out.contains("_ , _ , Error > (t)"), "{out}");
        assert!(out.contains("allow (dead_code)"), "{out}");
    }

    #[test]
    fn infallible_task_is_wrapped_in_ok() {
        let out = expand(
            quote!(),
            quote!(
                fn t(i: String) -> Vec<u8> {
                    i.into_bytes()
                }
            ),
        )
        .unwrap()
        .to_string();
        assert!(out.contains("TextCodec , :: wasmq_sdk :: __private :: BytesCodec"), "{out}");
        assert!(out.contains("Infallible"), "{out}");
    }

    #[test]
    fn rejects_arguments_to_attribute() {
        let err = expand(
            quote!(json),
            quote!(
                fn t(i: String) -> String {
                    i
                }
            ),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "#[task] takes no arguments");
    }

    #[test]
    fn rejects_non_function() {
        assert!(
            error(quote!(
                struct S;
            ))
            .starts_with("#[task] must be applied to a function")
        );
    }

    #[test]
    fn error_keeps_item_and_adds_placeholder_main() {
        let out = with_error(
            syn::Error::new(proc_macro2::Span::call_site(), "bad"),
            quote!(
                struct S;
            ),
        );
        assert_eq!(out.to_string(), quote!(::core::compile_error! { "bad" } struct S; fn main() {}).to_string());
        let out = with_error(
            syn::Error::new(proc_macro2::Span::call_site(), "bad"),
            quote!(
                fn main() {}
            ),
        );
        assert!(!out.to_string().ends_with("fn main () { } fn main () { }"), "{out}");
    }

    #[test]
    fn rejects_main() {
        assert!(
            error(quote!(
                fn main(i: String) -> String {
                    i
                }
            ))
            .contains("cannot be named `main`")
        );
    }
}
