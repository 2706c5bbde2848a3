//! The macros a backend's test file calls: [`crate::conformance_tests!`]
//! and [`crate::property_tests!`].

/// Expands to one `#[test]` per conformance case, each run against
/// `$target` (an expression of type [`TestTarget`]).
#[macro_export]
macro_rules! conformance_tests {
    ($target:expr) => {
        $crate::__conformance_value!($target);
        $crate::__conformance_list!($target);
        $crate::__conformance_map!($target);
        $crate::__conformance_folding!($target);
        $crate::__conformance_iteration!($target);
        $crate::__conformance_registration!($target);
        $crate::__conformance_ttl!($target);
        $crate::__conformance_snapshot!($target);
        $crate::__conformance_restore!($target);
        $crate::__conformance_damage!($target);
        $crate::__conformance_namespaces!($target);
        $crate::__conformance_timers!($target);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($target:expr; $topic:ident; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::testkit::conformance::$topic::$name(&$target);
            }
        )*
    };
}

/// Expands to the model-based property tests of [`model`] against
/// `$target`: one property, its cases split over
/// [`model::PARTS`] tests so that they run in parallel (storage round trips,
/// not CPU, dominate on remote storage).
#[macro_export]
macro_rules! property_tests {
    ($target:expr) => {
        $crate::__property_parts!($target;
            random_operations_with_snapshots_and_rescaling_match_btreemap_model_part_0 0,
            random_operations_with_snapshots_and_rescaling_match_btreemap_model_part_1 1,
            random_operations_with_snapshots_and_rescaling_match_btreemap_model_part_2 2,
            random_operations_with_snapshots_and_rescaling_match_btreemap_model_part_3 3,
            random_operations_with_snapshots_and_rescaling_match_btreemap_model_part_4 4,
            random_operations_with_snapshots_and_rescaling_match_btreemap_model_part_5 5,
            random_operations_with_snapshots_and_rescaling_match_btreemap_model_part_6 6,
            random_operations_with_snapshots_and_rescaling_match_btreemap_model_part_7 7,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __property_parts {
    ($target:expr; $($name:ident $part:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::testkit::model::run_part(&$target, $part);
            }
        )*
    };
}
