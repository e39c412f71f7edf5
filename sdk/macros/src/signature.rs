//! Checks a task function's signature and picks the codecs for its input and output.
//!
//! Proc macros run before type resolution, so codecs are chosen from the syntax of the
//! types. Every rejection carries the span of the offending part of the signature.

use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, PathArguments, ReturnType, Signature, Type};

/// How a value travels over stdin or stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// `Vec<u8>`: raw bytes.
    Bytes,
    /// `String`: UTF-8 text.
    Text,
    /// Any other type: JSON through serde.
    Json,
}

/// The parts of a valid task signature that code generation needs.
pub struct TaskSignature<'a> {
    pub input: &'a Type,
    pub output: &'a Type,
    pub input_codec: Codec,
    pub output_codec: Codec,
    /// The function returns `Result<Out, E>` rather than `Out`.
    pub fallible: bool,
    /// `E` when it is written out (it is not in `anyhow::Result<Out>`).
    pub error: Option<&'a Type>,
}

const SHAPE: &str = "expected `fn name(input: In) -> Result<Out, E>` or `fn name(input: In) -> Out`";

impl<'a> TaskSignature<'a> {
    pub fn parse(sig: &'a Signature) -> syn::Result<Self> {
        if let Some(token) = &sig.asyncness {
            return Err(syn::Error::new(token.span(), "a task function cannot be `async`: a task is a plain program that runs to completion"));
        }
        if let Some(token) = &sig.unsafety {
            return Err(syn::Error::new(token.span(), "a task function cannot be `unsafe`"));
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            return Err(syn::Error::new(sig.generics.span(), "a task function cannot be generic: its input and output types must be concrete"));
        }
        if sig.ident == "main" {
            return Err(syn::Error::new(sig.ident.span(), "a task function cannot be named `main`: #[task] generates `main` itself"));
        }
        let input = single_input(sig)?;
        let output = match &sig.output {
            ReturnType::Type(_, ty) => ty.as_ref(),
            ReturnType::Default => {
                return Err(syn::Error::new(sig.paren_token.span.close(), format!("a task function needs a return type; {SHAPE}")));
            }
        };
        let (output, fallible, error) = match result_types(output) {
            Some((ok, error)) => (ok, true, error),
            None => (output, false, None),
        };
        reject_borrowed(output, "output", "return")?;
        Ok(TaskSignature { input, output, input_codec: codec_for(input), output_codec: codec_for(output), fallible, error })
    }
}

fn single_input(sig: &Signature) -> syn::Result<&Type> {
    let mut args = sig.inputs.iter();
    let (first, rest) = (args.next(), args.next());
    let arg = match (first, rest) {
        (Some(arg), None) => arg,
        (None, _) => {
            return Err(syn::Error::new(sig.paren_token.span.join(), format!("a task function takes exactly one argument, the task input; {SHAPE}")));
        }
        (Some(_), Some(extra)) => {
            return Err(syn::Error::new(
                extra.span(),
                format!("a task function takes exactly one argument, found {}; bundle several values in one struct", sig.inputs.len()),
            ));
        }
    };
    match arg {
        FnArg::Receiver(receiver) => Err(syn::Error::new(receiver.span(), "a task function cannot take `self`")),
        FnArg::Typed(pat) => {
            reject_borrowed(&pat.ty, "input", "take")?;
            Ok(&pat.ty)
        }
    }
}

/// References and `impl Trait` cannot be produced from stdin or named in `main`.
fn reject_borrowed(ty: &Type, what: &str, verb: &str) -> syn::Result<()> {
    match unwrap_group(ty) {
        Type::Reference(_) => {
            Err(syn::Error::new(ty.span(), format!("the task {what} must be owned: {verb} `String` or `Vec<u8>` or a struct, not a reference")))
        }
        Type::ImplTrait(_) if what == "input" => Err(syn::Error::new(ty.span(), "the task input must be a concrete type, not `impl Trait`")),
        _ => Ok(()),
    }
}

/// For `Result<T, E>` (any path ending in `Result`, such as `anyhow::Result<T>`), the
/// success type `T` and, when written, the error type `E`.
fn result_types(ty: &Type) -> Option<(&Type, Option<&Type>)> {
    let Type::Path(path) = unwrap_group(ty) else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    });
    let ok = types.next()?;
    Some((ok, types.next()))
}

/// Picks the codec from the type as written: `Vec<u8>` is bytes, `String` is text,
/// everything else is JSON.
pub fn codec_for(ty: &Type) -> Codec {
    let Type::Path(path) = unwrap_group(ty) else {
        return Codec::Json;
    };
    if path.qself.is_some() {
        return Codec::Json;
    }
    let Some(last) = path.path.segments.last() else {
        return Codec::Json;
    };
    match (last.ident.to_string().as_str(), &last.arguments) {
        ("String", PathArguments::None) => Codec::Text,
        ("Vec", PathArguments::AngleBracketed(args)) if args.args.len() == 1 => match &args.args[0] {
            GenericArgument::Type(elem) if is_u8(elem) => Codec::Bytes,
            _ => Codec::Json,
        },
        _ => Codec::Json,
    }
}

fn is_u8(ty: &Type) -> bool {
    match unwrap_group(ty) {
        Type::Path(p) => p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == "u8" && s.arguments.is_none()),
        _ => false,
    }
}

fn unwrap_group(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => unwrap_group(&g.elem),
        Type::Paren(p) => unwrap_group(&p.elem),
        _ => ty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn codec(ty: Type) -> Codec {
        codec_for(&ty)
    }

    fn parse(sig: Signature) -> Result<(Codec, Codec, bool), String> {
        TaskSignature::parse(&sig).map(|s| (s.input_codec, s.output_codec, s.fallible)).map_err(|e| e.to_string())
    }

    #[test]
    fn codec_follows_type_syntax() {
        assert_eq!(codec(parse_quote!(Vec<u8>)), Codec::Bytes);
        assert_eq!(codec(parse_quote!(std::vec::Vec<u8>)), Codec::Bytes);
        assert_eq!(codec(parse_quote!(Vec<core::primitive::u8>)), Codec::Bytes);
        assert_eq!(codec(parse_quote!(String)), Codec::Text);
        assert_eq!(codec(parse_quote!(::std::string::String)), Codec::Text);
        assert_eq!(codec(parse_quote!((String))), Codec::Text);
        assert_eq!(codec(parse_quote!(Vec<u16>)), Codec::Json);
        assert_eq!(codec(parse_quote!(Vec<String>)), Codec::Json);
        assert_eq!(codec(parse_quote!(Input)), Codec::Json);
        assert_eq!(codec(parse_quote!(Json<String>)), Codec::Json);
        assert_eq!(codec(parse_quote!(wasmq_sdk::Json<Vec<u8>>)), Codec::Json);
        assert_eq!(codec(parse_quote!((u32, u32))), Codec::Json);
        assert_eq!(codec(parse_quote!([u8; 4])), Codec::Json);
    }

    #[test]
    fn detects_result_return() {
        assert_eq!(parse(parse_quote!(fn t(i: Vec<u8>) -> Result<String, E>)), Ok((Codec::Bytes, Codec::Text, true)));
        assert_eq!(parse(parse_quote!(fn t(i: In) -> anyhow::Result<Out>)), Ok((Codec::Json, Codec::Json, true)));
        assert_eq!(parse(parse_quote!(fn t(i: String) -> Out)), Ok((Codec::Text, Codec::Json, false)));
        assert_eq!(parse(parse_quote!(fn t(i: String) -> Option<Vec<u8>>)), Ok((Codec::Text, Codec::Json, false)));
    }

    #[test]
    fn rejects_bad_signatures() {
        let cases: [(Signature, &str); 11] = [
            (parse_quote!(async fn t(i: In) -> Out), "cannot be `async`"),
            (parse_quote!(unsafe fn t(i: In) -> Out), "cannot be `unsafe`"),
            (parse_quote!(fn t<T>(i: T) -> Out), "cannot be generic"),
            (parse_quote!(fn t<'a>(i: In) -> Out), "cannot be generic"),
            (parse_quote!(fn t(i: In) -> Out where In: Copy), "cannot be generic"),
            (parse_quote!(fn t() -> Out), "exactly one argument, the task input"),
            (parse_quote!(fn t(a: In, b: In) -> Out), "exactly one argument, found 2"),
            (parse_quote!(fn t(i: In)), "needs a return type"),
            (parse_quote!(fn t(i: &str) -> String), "input must be owned"),
            (parse_quote!(fn t(i: impl Read) -> String), "not `impl Trait`"),
            (parse_quote!(fn t(i: String) -> Result<&'static str, E>), "output must be owned"),
        ];
        for (sig, expected) in cases {
            let err = parse(sig).unwrap_err();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }
}
