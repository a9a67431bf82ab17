//! Enums stored as text. Every state column (a job's status, an approval's, an
//! integration's) keeps the plain words plain-SQL users already read and write, while
//! the code sees an enum: [`text_enum!`] gives one its words, `FromStr` with an error
//! that lists what is accepted, `Display`, serde as the same words, and the sqlx
//! encoding as Postgres `text`.

use std::fmt;

/// A word that is not one of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct UnknownValue {
    /// What the value names (`job status`, `channel`, ...).
    pub what: &'static str,
    pub got: String,
    pub expected: &'static [&'static str],
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} {:?}: expected ", self.what, self.got)?;
        let n = self.expected.len();
        for (i, e) in self.expected.iter().enumerate() {
            let sep = match i {
                0 => "",
                i if i + 1 == n => " or ",
                _ => ", ",
            };
            write!(f, "{sep}{e}")?;
        }
        Ok(())
    }
}

/// Defines an enum whose values are stored and shown as fixed words.
///
/// ```
/// copydesk_queue::text_enum! {
///     /// A colour.
///     pub enum Colour("colour") { Red = "red", Green = "green" }
/// }
/// assert_eq!("red".parse::<Colour>().unwrap(), Colour::Red);
/// assert_eq!(Colour::Green.to_string(), "green");
/// assert_eq!(
///     "blue".parse::<Colour>().unwrap_err().to_string(),
///     "unknown colour \"blue\": expected red or green"
/// );
/// ```
#[macro_export]
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name { $( $(#[$vmeta])* $variant ),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];
            /// Every value's word, in declaration order.
            pub const WORDS: &'static [&'static str] = &[$($text),+];

            /// The word stored in the database and shown to people.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::text::UnknownValue;
            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::text::UnknownValue {
                        what: $what,
                        got: s.to_owned(),
                        expected: Self::WORDS,
                    }),
                }
            }
        }

        impl $crate::__private::serde::Serialize for $name {
            fn serialize<S: $crate::__private::serde::Serializer>(
                &self,
                s: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> $crate::__private::serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::__private::serde::Deserializer<'de>>(
                d: D,
            ) -> ::std::result::Result<Self, D::Error> {
                let s = <::std::string::String as $crate::__private::serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(<D::Error as $crate::__private::serde::de::Error>::custom)
            }
        }

        impl $crate::__private::sqlx::Type<$crate::__private::sqlx::Postgres> for $name {
            fn type_info() -> $crate::__private::sqlx::postgres::PgTypeInfo {
                <str as $crate::__private::sqlx::Type<$crate::__private::sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &$crate::__private::sqlx::postgres::PgTypeInfo) -> bool {
                <str as $crate::__private::sqlx::Type<$crate::__private::sqlx::Postgres>>::compatible(ty)
            }
        }

        impl $crate::__private::sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> $crate::__private::sqlx::postgres::PgTypeInfo {
                <&str as $crate::__private::sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }

        impl<'q> $crate::__private::sqlx::Encode<'q, $crate::__private::sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut $crate::__private::sqlx::postgres::PgArgumentBuffer,
            ) -> ::std::result::Result<
                $crate::__private::sqlx::encode::IsNull,
                $crate::__private::sqlx::error::BoxDynError,
            > {
                <&str as $crate::__private::sqlx::Encode<'_, $crate::__private::sqlx::Postgres>>::encode_by_ref(
                    &self.as_str(),
                    buf,
                )
            }
        }

        impl<'r> $crate::__private::sqlx::Decode<'r, $crate::__private::sqlx::Postgres> for $name {
            fn decode(
                value: $crate::__private::sqlx::postgres::PgValueRef<'r>,
            ) -> ::std::result::Result<Self, $crate::__private::sqlx::error::BoxDynError> {
                let s = <&str as $crate::__private::sqlx::Decode<'r, $crate::__private::sqlx::Postgres>>::decode(value)?;
                Ok(s.parse::<$name>()?)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::text_enum! {
        enum Fruit("fruit") { Apple = "apple", Pear = "pear", Plum = "plum" }
    }

    #[test]
    fn words_round_trip_and_unknown_ones_list_the_choices() {
        for f in Fruit::ALL {
            assert_eq!(f.as_str().parse::<Fruit>().unwrap(), f);
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{f}\""));
            assert_eq!(serde_json::from_str::<Fruit>(&json).unwrap(), f);
        }
        let err = "kiwi".parse::<Fruit>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown fruit \"kiwi\": expected apple, pear or plum"
        );
        let err = serde_json::from_str::<Fruit>("\"kiwi\"").unwrap_err();
        assert!(
            err.to_string().contains("expected apple, pear or plum"),
            "{err}"
        );
    }
}
