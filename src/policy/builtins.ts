/**
 * Function lists. A call to a function in READ_ONLY_BUILTINS (unqualified or pg_catalog.)
 * needs no grant; a FORBIDDEN one needs a scope with `all`; anything else needs an explicit
 * `{ actions: [execute], functions: [...] }`. Sequence functions and pg_notify are handled
 * by the walker (they act on a named object).
 */

const words = (s: string): string[] => s.trim().split(/\s+/);

const CATEGORIES: Record<string, string> = {
  aggregates: `count sum avg min max array_agg string_agg bool_and bool_or every bit_and bit_or bit_xor
    json_agg jsonb_agg json_object_agg jsonb_object_agg json_agg_strict jsonb_agg_strict
    json_object_agg_strict jsonb_object_agg_strict json_object_agg_unique jsonb_object_agg_unique
    json_arrayagg json_objectagg xmlagg any_value range_agg range_intersect_agg
    stddev stddev_pop stddev_samp variance var_pop var_samp corr covar_pop covar_samp
    regr_avgx regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy
    mode percentile_cont percentile_disc rank dense_rank percent_rank cume_dist grouping`,
  window: `row_number ntile lag lead first_value last_value nth_value`,
  math: `abs cbrt ceil ceiling degrees div exp factorial floor gcd lcm ln log log10 min_scale mod pi power
    pow radians round scale sign sqrt trim_scale trunc width_bucket random random_normal setseed
    acos acosd asin asind atan atand atan2 atan2d cos cosd cot cotd sin sind tan tand
    sinh cosh tanh asinh acosh atanh erf erfc numeric int2 int4 int8 float4 float8 to_number`,
  string: `ascii bit_length btrim char_length character_length chr concat concat_ws format initcap
    left length lower lpad ltrim md5 octet_length overlay parse_ident position quote_ident
    quote_literal quote_nullable regexp_count regexp_instr regexp_like regexp_match regexp_matches
    regexp_replace regexp_split_to_array regexp_split_to_table regexp_substr repeat replace reverse
    right rpad rtrim split_part starts_with string_to_array string_to_table strpos substr substring
    to_ascii to_hex to_oct to_bin translate unistr upper casefold normalize is_normalized unicode_assigned
    similar_to_escape similar_escape like_escape encode decode convert convert_from convert_to
    sha224 sha256 sha384 sha512 crc32 crc32c get_bit get_byte set_bit set_byte bit_count
    text textlen textcat varchar bpchar name char pg_collation_for`,
  datetime: `now current_timestamp clock_timestamp statement_timestamp transaction_timestamp timeofday
    age date_add date_subtract date_bin date_part date_trunc extract isfinite justify_days
    justify_hours justify_interval make_date make_interval make_time make_timestamp make_timestamptz
    to_char to_date to_timestamp timezone date time timestamp timestamptz interval`,
  json: `to_json to_jsonb array_to_json row_to_json json_build_array jsonb_build_array json_build_object
    jsonb_build_object json_object jsonb_object json_array_length jsonb_array_length json_each
    jsonb_each json_each_text jsonb_each_text json_extract_path jsonb_extract_path
    json_extract_path_text jsonb_extract_path_text json_object_keys jsonb_object_keys
    json_populate_record jsonb_populate_record jsonb_populate_record_valid json_populate_recordset
    jsonb_populate_recordset json_to_record jsonb_to_record json_to_recordset jsonb_to_recordset
    json_array_elements jsonb_array_elements json_array_elements_text jsonb_array_elements_text
    json_typeof jsonb_typeof json_strip_nulls jsonb_strip_nulls jsonb_set jsonb_set_lax jsonb_insert
    jsonb_pretty jsonb_path_exists jsonb_path_match jsonb_path_query jsonb_path_query_array
    jsonb_path_query_first jsonb_path_exists_tz jsonb_path_match_tz jsonb_path_query_tz
    jsonb_path_query_array_tz jsonb_path_query_first_tz jsonb_concat jsonb_delete jsonb_delete_path
    jsonb_contains jsonb_contained jsonb_exists jsonb_exists_any jsonb_exists_all jsonb_hash
    json_scalar json_serialize json_array json_query json_value json_exists to_tsvector_json`,
  arrays: `array_append array_cat array_dims array_fill array_length array_lower array_ndims
    array_position array_positions array_prepend array_remove array_replace array_reverse
    array_sample array_shuffle array_sort array_to_string array_upper cardinality trim_array unnest
    generate_series generate_subscripts`,
  conditional: `num_nonnulls num_nulls`,
  network: `abbrev broadcast family host hostmask inet_merge inet_same_family masklen netmask network
    set_masklen trunc macaddr8_set7bit inet cidr`,
  uuid: `gen_random_uuid uuidv4 uuidv7 uuid_extract_timestamp uuid_extract_version`,
  ranges: `lower_inc upper_inc lower_inf upper_inf isempty range_merge multirange int4range int8range
    numrange tsrange tstzrange daterange int4multirange int8multirange nummultirange tsmultirange
    tstzmultirange datemultirange`,
  textsearch: `to_tsvector to_tsquery plainto_tsquery phraseto_tsquery websearch_to_tsquery ts_rank
    ts_rank_cd ts_headline setweight strip numnode querytree tsvector_to_array array_to_tsvector
    ts_delete ts_filter ts_lexize ts_parse ts_token_type ts_debug get_current_ts_config length`,
  xml: `xmlcomment xmlconcat xmlelement xmlforest xmlpi xmlroot xmlexists xml_is_well_formed
    xml_is_well_formed_document xml_is_well_formed_content xpath xpath_exists xmlparse xmlserialize xmltext`,
  session_info: `current_catalog current_database current_query current_role current_schema
    current_schemas current_user session_user system_user user inet_client_addr inet_client_port
    inet_server_addr inet_server_port pg_backend_pid pg_conf_load_time
    pg_current_logfile pg_is_other_temp_schema pg_jit_available pg_listening_channels
    pg_my_temp_schema pg_postmaster_start_time pg_trigger_depth
    version current_setting pg_notification_queue_usage pg_is_in_recovery
    txid_current txid_current_if_assigned txid_current_snapshot txid_snapshot_xmin txid_snapshot_xmax
    txid_snapshot_xip txid_visible_in_snapshot txid_status pg_current_xact_id pg_current_xact_id_if_assigned
    pg_current_snapshot pg_snapshot_xip pg_snapshot_xmax pg_snapshot_xmin pg_visible_in_snapshot
    pg_xact_status pg_last_committed_xact pg_xact_commit_timestamp pg_control_checkpoint
    pg_control_system pg_control_init pg_control_recovery lastval`,
  privileges: `has_any_column_privilege has_column_privilege has_database_privilege
    has_foreign_data_wrapper_privilege has_function_privilege has_language_privilege
    has_largeobject_privilege has_parameter_privilege has_schema_privilege has_sequence_privilege
    has_server_privilege has_table_privilege has_tablespace_privilege has_type_privilege
    pg_has_role acldefault aclexplode makeaclitem row_security_active`,
  // What psql's \d family and common GUI tools call: definitions only. Functions returning
  // statistics, sequence values, locks, other sessions' queries/statements/cursors, memory
  // contexts or settings files are not here: they need an execute grant (see catalog-read.ts).
  catalog: `col_description format_type obj_description shobj_description pg_get_catalog_foreign_keys
    pg_get_constraintdef pg_get_expr pg_get_functiondef pg_get_function_arguments
    pg_get_function_identity_arguments pg_get_function_result pg_get_function_sqlbody pg_get_indexdef
    pg_get_keywords pg_get_partkeydef pg_get_partition_constraintdef pg_get_ruledef
    pg_get_serial_sequence pg_get_statisticsobjdef pg_get_statisticsobjdef_columns
    pg_get_statisticsobjdef_expressions pg_get_triggerdef pg_get_userbyid pg_get_viewdef
    pg_index_column_has_property pg_index_has_property pg_indexam_has_property pg_options_to_table
    pg_settings_get_flags pg_tablespace_databases pg_tablespace_location pg_typeof pg_basetype
    pg_char_to_encoding pg_encoding_to_char pg_client_encoding to_regclass to_regcollation to_regnamespace to_regoper
    to_regoperator to_regproc to_regprocedure to_regrole to_regtype to_regtypemod
    pg_collation_is_visible pg_conversion_is_visible pg_function_is_visible pg_opclass_is_visible
    pg_operator_is_visible pg_opfamily_is_visible pg_statistics_obj_is_visible pg_table_is_visible
    pg_ts_config_is_visible pg_ts_dict_is_visible pg_ts_parser_is_visible pg_ts_template_is_visible
    pg_type_is_visible pg_describe_object pg_identify_object pg_identify_object_as_address
    pg_get_object_address pg_partition_ancestors pg_partition_root pg_partition_tree
    pg_relation_is_publishable pg_get_publication_tables pg_relation_filenode pg_relation_filepath
    pg_filenode_relation pg_column_size pg_column_compression pg_column_toast_chunk_id
    pg_database_size pg_indexes_size pg_relation_size pg_size_bytes pg_size_pretty pg_table_size
    pg_tablespace_size pg_total_relation_size pg_input_is_valid pg_input_error_info
    pg_get_viewdef pg_get_wal_resource_managers pg_sequence_parameters
    pg_available_extensions pg_available_extension_versions pg_extension_config_dump
    pg_show_all_settings pg_timezone_names pg_timezone_abbrevs pg_get_replica_identity_index
    regclass regtype regproc regprocedure regoper regoperator regnamespace regrole regconfig
    regdictionary regcollation oid`,
  // Transaction-scoped locks end with the transaction; session ones are reset by the pooler.
  advisory_locks: `pg_advisory_xact_lock pg_advisory_xact_lock_shared pg_try_advisory_xact_lock
    pg_try_advisory_xact_lock_shared pg_advisory_lock pg_advisory_lock_shared pg_try_advisory_lock
    pg_try_advisory_lock_shared pg_advisory_unlock pg_advisory_unlock_shared pg_advisory_unlock_all`,
  misc: `coalesce nullif greatest least bool boolean int bit varbit bytea money point line lseg box
    path polygon circle area center diameter height width radius npoints pclose popen isclosed isopen
    isvertical ishorizontal isparallel isperpendicular inet_in to_regtypemod
    string_to_array array_to_string`,
};

export const READ_ONLY_BUILTINS: ReadonlySet<string> = new Set(Object.values(CATEGORIES).flatMap(words));

/** Never without `all`: they escape the role, touch the server's files or other sessions, or run dynamic SQL. */
export const FORBIDDEN_FUNCTIONS: ReadonlySet<string> = new Set(words(`
  set_config pg_reload_conf pg_rotate_logfile pg_rotate_logfile_old pg_logfile_rotate pg_promote
  pg_terminate_backend pg_cancel_backend pg_signal_backend pg_log_backend_memory_contexts
  pg_switch_wal pg_create_restore_point pg_start_backup pg_stop_backup pg_backup_start pg_backup_stop
  pg_stat_file pg_import_system_collations pg_wal_replay_pause pg_wal_replay_resume
  pg_sync_replication_slots pg_stat_reset pg_stat_reset_shared pg_stat_reset_single_table_counters
  pg_stat_reset_single_function_counters pg_stat_reset_slru pg_stat_reset_replication_slot
  pg_stat_reset_subscription_stats pg_stat_statements_reset pg_clear_attribute_stats
  pg_restore_attribute_stats pg_clear_relation_stats pg_restore_relation_stats
  query_to_xml query_to_xmlschema query_to_xml_and_xmlschema cursor_to_xml cursor_to_xmlschema
  table_to_xml table_to_xmlschema table_to_xml_and_xmlschema schema_to_xml schema_to_xmlschema
  schema_to_xml_and_xmlschema database_to_xml database_to_xmlschema database_to_xml_and_xmlschema
  ts_stat binary_upgrade_set_next_pg_type_oid loread lowrite
`));

/** Name prefixes that are forbidden as a family (server files, large objects, dblink, replication). */
export const FORBIDDEN_PREFIXES: readonly string[] = [
  'dblink', 'lo_', 'pg_read_', 'pg_ls_', 'pg_file_', 'pg_replication_', 'pg_create_',
  'pg_drop_replication', 'pg_logical_', 'pg_copy_', 'pg_wal_replay', 'binary_upgrade_',
  'pg_stat_reset',
];

export function isForbiddenFunction(name: string): boolean {
  if (FORBIDDEN_FUNCTIONS.has(name)) return true;
  for (const p of FORBIDDEN_PREFIXES) if (name.startsWith(p)) return true;
  return false;
}

/** Sequence functions: the action they need on the named sequence. */
export const SEQUENCE_FUNCTIONS: ReadonlyMap<string, 'usage' | 'update'> = new Map([
  ['nextval', 'usage'],
  ['currval', 'usage'],
  ['setval', 'update'],
]);

/** Session advisory locks (outlive the transaction). */
export const SESSION_LOCK_FUNCTIONS: ReadonlySet<string> = new Set([
  'pg_advisory_lock', 'pg_advisory_lock_shared', 'pg_try_advisory_lock', 'pg_try_advisory_lock_shared',
]);

/**
 * Schema of an unqualified relation name: pg_catalog is searched before the default schema,
 * and any pg_-prefixed name is taken as pg_catalog's (a catalog view this list lacks must not
 * pass for a default-schema table a scope may grant).
 */
export function unqualifiedRelationSchema(name: string, defaultSchema: string): string {
  return CATALOG_RELATIONS.has(name) || name.startsWith('pg_') ? 'pg_catalog' : defaultSchema;
}

/**
 * pg_catalog relations an unqualified name resolves to (pg_catalog is searched before the
 * default schema). Other unqualified names resolve to default_schema.
 */
export const CATALOG_RELATIONS: ReadonlySet<string> = new Set(words(`
  pg_aggregate pg_am pg_amop pg_amproc pg_attrdef pg_attribute pg_auth_members pg_authid pg_cast
  pg_class pg_collation pg_constraint pg_conversion pg_database pg_db_role_setting pg_default_acl
  pg_depend pg_description pg_enum pg_event_trigger pg_extension pg_foreign_data_wrapper
  pg_foreign_server pg_foreign_table pg_index pg_inherits pg_init_privs pg_language
  pg_largeobject pg_largeobject_metadata pg_namespace pg_opclass pg_operator pg_opfamily
  pg_parameter_acl pg_partitioned_table pg_policy pg_proc pg_publication pg_publication_namespace
  pg_publication_rel pg_range pg_replication_origin pg_rewrite pg_seclabel pg_sequence pg_shdepend
  pg_shdescription pg_shseclabel pg_statistic pg_statistic_ext pg_statistic_ext_data
  pg_subscription pg_subscription_rel pg_tablespace pg_transform pg_trigger pg_ts_config
  pg_ts_config_map pg_ts_dict pg_ts_parser pg_ts_template pg_type pg_user_mapping
  pg_available_extensions pg_available_extension_versions pg_backend_memory_contexts pg_config
  pg_cursors pg_file_settings pg_group pg_hba_file_rules pg_ident_file_mappings pg_indexes pg_locks
  pg_matviews pg_policies pg_prepared_statements pg_prepared_xacts pg_publication_tables pg_roles
  pg_rules pg_seclabels pg_sequences pg_settings pg_shadow pg_shmem_allocations pg_stats
  pg_stats_ext pg_stats_ext_exprs pg_tables pg_timezone_abbrevs pg_timezone_names pg_user
  pg_user_mappings pg_views pg_wait_events pg_stat_activity pg_stat_all_tables pg_stat_user_tables
  pg_stat_sys_tables pg_stat_all_indexes pg_stat_user_indexes pg_stat_database pg_stat_replication
  pg_stat_wal pg_stat_io pg_stat_bgwriter pg_stat_checkpointer pg_stat_statements
  pg_stat_user_functions pg_statio_all_tables pg_statio_user_tables pg_stat_progress_vacuum
`));
