use std::collections::BTreeSet;

use prost::Message as _;
use prost_types::FileDescriptorSet;

use crate::ferrishop::common::v1::Money;
use crate::ferrishop::order::v1::{Order, OrderLine, OrderStatus};
use crate::ferrishop::{inventory, order, payment, user};

/// Full names (`package.Service`) of every service in the descriptor set.
fn service_names() -> Result<BTreeSet<String>, prost::DecodeError> {
    let fds = FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)?;
    Ok(fds
        .file
        .iter()
        .flat_map(|file| {
            file.service
                .iter()
                .map(move |service| format!("{}.{}", file.package(), service.name()))
        })
        .collect())
}

#[test]
fn descriptor_set_has_every_service() -> Result<(), prost::DecodeError> {
    let names = service_names()?;
    for expected in [
        "ferrishop.user.v1.UserService",
        "ferrishop.inventory.v1.InventoryService",
        "ferrishop.payment.v1.PaymentService",
        "ferrishop.order.v1.OrderService",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    Ok(())
}

#[test]
fn generated_servers_match_descriptor_names() -> Result<(), prost::DecodeError> {
    let names = service_names()?;
    for generated in [
        user::v1::user_service_server::SERVICE_NAME,
        inventory::v1::inventory_service_server::SERVICE_NAME,
        payment::v1::payment_service_server::SERVICE_NAME,
        order::v1::order_service_server::SERVICE_NAME,
    ] {
        assert!(
            names.contains(generated),
            "{generated} missing from {names:?}"
        );
    }
    Ok(())
}

#[test]
fn descriptor_set_is_self_contained() -> Result<(), prost::DecodeError> {
    // tonic-reflection resolves imports from the same set.
    let fds = FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)?;
    let files: BTreeSet<&str> = fds.file.iter().map(|file| file.name()).collect();
    for file in &fds.file {
        for dependency in &file.dependency {
            assert!(
                files.contains(dependency.as_str()),
                "{} imports {dependency}, which is not in the set",
                file.name()
            );
        }
    }
    Ok(())
}

#[test]
fn order_round_trips() -> Result<(), prost::DecodeError> {
    let eur = |amount| Money {
        amount,
        currency: "EUR".to_owned(),
    };
    let order = Order {
        id: "01936b6e-8f1a-7cc2-9d0e-2f4c8a1b3e5d".to_owned(),
        customer_id: "01936b6e-0000-7000-8000-000000000001".to_owned(),
        status: OrderStatus::Confirmed.into(),
        lines: vec![OrderLine {
            product_id: "01936b6e-0000-7000-8000-000000000002".to_owned(),
            product_name: "Keyboard".to_owned(),
            quantity: 3,
            unit_price: Some(eur(1999)),
            line_total: Some(eur(5997)),
        }],
        total: Some(eur(5997)),
        failure_reason: String::new(),
        created_at: Some(prost_types::Timestamp {
            seconds: 1_732_000_000,
            nanos: 123_000_000,
        }),
        updated_at: None,
        ..Order::default()
    };

    let decoded = Order::decode(order.encode_to_vec().as_slice())?;

    assert_eq!(decoded, order);
    assert_eq!(decoded.status(), OrderStatus::Confirmed);
    assert_eq!(
        OrderStatus::Confirmed.as_str_name(),
        "ORDER_STATUS_CONFIRMED"
    );
    Ok(())
}
