use std::collections::BTreeSet;

use prost::Message as _;
use prost_types::FileDescriptorSet;

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
