//! A/B experiments between flow versions: variants, exposures, and the assignment kept
//! on the enrollment.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("experiments")
                    .col(big_pk_auto("id"))
                    .col(string_uniq("key"))
                    .col(string("flow_key"))
                    .col(string("state"))
                    .col(string_null("winner"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("started_at"))
                    .col(timestamp_with_time_zone_null("stopped_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("experiments_flow_state")
                    .table("experiments")
                    .col("flow_key")
                    .col("state")
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("experiment_variants")
                    .col(big_pk_auto("id"))
                    .col(big_integer("experiment_id"))
                    .col(string("name"))
                    .col(integer("version"))
                    .col(integer("weight"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("experiment_variants", "experiment_id")
                            .to("experiments", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("experiment_variants_name")
                    .table("experiment_variants")
                    .col("experiment_id")
                    .col("name")
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("exposures")
                    .col(big_pk_auto("id"))
                    .col(big_integer("experiment_id"))
                    .col(string("variant"))
                    // The subject's external id: a status read exposes a subject that
                    // has no row yet.
                    .col(string("subject_id"))
                    .col(timestamp_with_time_zone("exposed_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("exposures", "experiment_id")
                            .to("experiments", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Exactly once per subject and experiment.
        manager
            .create_index(
                Index::create()
                    .name("exposures_experiment_subject")
                    .table("exposures")
                    .col("experiment_id")
                    .col("subject_id")
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("exposures_experiment_variant")
                    .table("exposures")
                    .col("experiment_id")
                    .col("variant")
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(Table::alter().table("enrollments").add_column(string_null("experiment_key")).to_owned())
            .await?;
        manager.alter_table(Table::alter().table("enrollments").add_column(string_null("variant")).to_owned()).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table("enrollments").drop_column("variant").to_owned()).await?;
        manager.alter_table(Table::alter().table("enrollments").drop_column("experiment_key").to_owned()).await?;
        for table in ["exposures", "experiment_variants", "experiments"] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
