/**
 * What `catalog: read` grants: a named list of catalog relations that hold schema metadata
 * only. Everything else in pg_catalog (statistics, other sessions' queries, locks, cursors,
 * settings files, sequence values, password hashes, large objects) needs a grant like any
 * table. An allowlist on purpose: a catalog view added by a future PostgreSQL is denied
 * until someone decides it holds no data.
 */
import type { QualName } from './types.js';

const words = (s: string): string[] => s.trim().split(/\s+/);

/**
 * pg_catalog relations readable under `catalog: read`: what psql's \d family, drivers'
 * type and metadata lookups (pgjdbc DatabaseMetaData, node-postgres, postgres.js, psycopg)
 * and ORMs' introspection read. None carries table contents or another session's state.
 */
export const METADATA_CATALOG: ReadonlySet<string> = new Set(words(`
  pg_aggregate pg_am pg_amop pg_amproc pg_attrdef pg_attribute pg_auth_members pg_cast pg_class
  pg_collation pg_constraint pg_conversion pg_database pg_default_acl pg_depend pg_description
  pg_enum pg_event_trigger pg_extension pg_foreign_data_wrapper pg_foreign_server pg_foreign_table
  pg_index pg_inherits pg_init_privs pg_language pg_largeobject_metadata pg_namespace pg_opclass
  pg_operator pg_opfamily pg_parameter_acl pg_partitioned_table pg_policy pg_proc pg_publication
  pg_publication_namespace pg_publication_rel pg_range pg_rewrite pg_seclabel pg_sequence
  pg_shdepend pg_shdescription pg_shseclabel pg_statistic_ext pg_tablespace pg_transform
  pg_trigger pg_ts_config pg_ts_config_map pg_ts_dict pg_ts_parser pg_ts_template pg_type
  pg_available_extensions pg_available_extension_versions pg_group pg_indexes pg_matviews
  pg_policies pg_publication_tables pg_roles pg_rules pg_seclabels pg_settings pg_tables
  pg_timezone_abbrevs pg_timezone_names pg_user pg_views pg_wait_events
`));

/**
 * information_schema views readable under `catalog: read`: all of them except the user
 * mapping views (their options carry passwords). Every other view shows definitions filtered
 * by the role's privileges; `sequences` shows parameters, not values; `columns.column_default`
 * is the default expression.
 */
export const METADATA_INFORMATION_SCHEMA: ReadonlySet<string> = new Set(words(`
  _pg_foreign_data_wrappers _pg_foreign_servers _pg_foreign_table_columns _pg_foreign_tables
  administrable_role_authorizations applicable_roles attributes character_sets
  check_constraint_routine_usage check_constraints collation_character_set_applicability
  collations column_column_usage column_domain_usage column_options column_privileges
  column_udt_usage columns constraint_column_usage constraint_table_usage data_type_privileges
  domain_constraints domain_udt_usage domains element_types enabled_roles
  foreign_data_wrapper_options foreign_data_wrappers foreign_server_options foreign_servers
  foreign_table_options foreign_tables information_schema_catalog_name key_column_usage
  parameters referential_constraints role_column_grants role_routine_grants role_table_grants
  role_udt_grants role_usage_grants routine_column_usage routine_privileges routine_routine_usage
  routine_sequence_usage routine_table_usage routines schemata sequences sql_features
  sql_implementation_info sql_parts sql_sizing table_constraints table_privileges tables
  transforms triggered_update_columns triggers udt_privileges usage_privileges
  user_defined_types view_column_usage view_routine_usage view_table_usage views
`));

/** information_schema's helper functions (pure; pgjdbc's getPrimaryKeys calls _pg_expandarray). */
export const INFORMATION_SCHEMA_FUNCTIONS: ReadonlySet<string> = new Set(words(`
  _pg_expandarray _pg_index_position _pg_truetypid _pg_truetypmod _pg_char_max_length
  _pg_char_octet_length _pg_numeric_precision _pg_numeric_precision_radix _pg_numeric_scale
  _pg_datetime_precision _pg_interval_type
`));

/** Whether `catalog: read` lets any policy scope SELECT from `rel`. */
export function isMetadataRelation(rel: QualName): boolean {
  if (rel.schema === 'pg_catalog') return METADATA_CATALOG.has(rel.name);
  if (rel.schema === 'information_schema') return METADATA_INFORMATION_SCHEMA.has(rel.name);
  return false;
}
