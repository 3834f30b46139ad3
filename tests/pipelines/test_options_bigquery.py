"""The BigQuery flags: what they accept and the mistakes they name before anything runs."""

import datetime

import pytest

from transforms.bigquery.checks import parse_parameter
from pipelines.options import BatchInferenceOptions


def _options(*argv) -> BatchInferenceOptions:
  return BatchInferenceOptions(['--model=m', '--output=bq://p.d.out', '--temp_location=gs://b/tmp', *argv])


def test_flags__table_input_with_filter_and_key_is_valid():
  opts = _options('--input=bq://p.d.in', '--input_filter=year = 2009', '--key_column=id')
  opts.validate_flags()
  assert opts.reads_bigquery and opts.bq_write_method == 'FILE_LOADS'
  assert opts.dead_letter_target == 'bq://p.d.out_dead_letters'


@pytest.mark.parametrize('argv, problem', [
    (['--input=bq://p.d.in'], 'a BigQuery input needs --key_column'),
    (['--input=bq://p.d.in', '--input_query=SELECT 1', '--key_column=id'], 'exactly one of --input and --input_query'),
    (['--input_query=SELECT 1', '--key_column=id'], '--input_query needs --bq_temp_dataset'),
    (['--input=x.csv', '--input_filter=a = 1'], '--input_filter applies to a bq:// --input only'),
    (['--input=x.csv', '--query_parameter=a=INT64:1'], '--query_parameter applies to --input_query only'),
])
def test_flags__inconsistent_bigquery_flags_are_named(argv, problem):
  with pytest.raises(ValueError, match=problem):
    _options(*argv).validate_flags()


def test_flags__file_loads_need_a_gs_temp_location():
  opts = BatchInferenceOptions(['--model=m', '--input=x.csv', '--output=out', '--dead_letter=bq://p.d.rejected',
                                '--temp_location=build/tmp'])
  with pytest.raises(ValueError, match='FILE_LOADS stages files under --temp_location, which must be gs://'):
    opts.validate_flags()
  BatchInferenceOptions(['--model=m', '--input=x.csv', '--output=bq://p.d.t', '--bq_write_method=STREAMING_INSERTS',
                         '--summary_location=build/runs']).validate_flags()


def test_flags__a_table_output_needs_a_home_for_its_summary():
  with pytest.raises(ValueError, match='keeps its run summary and report in --summary_location'):
    BatchInferenceOptions(['--model=m', '--input=x.csv', '--output=bq://p.d.t',
                           '--bq_write_method=STREAMING_INSERTS']).validate_flags()
  opts = BatchInferenceOptions(['--model=m', '--input=x.csv', '--output=bq://p.d.t', '--temp_location=gs://b/tmp/'])
  assert opts.records_location() == 'gs://b/tmp/runs'


def test_flags__query_parameters_repeat():
  opts = _options('--input_query=SELECT 1', '--bq_temp_dataset=p.tmp', '--key_column=id',
                  '--query_parameter=a=INT64:1', '--query_parameter=b=DATE:2026-11-25')
  opts.validate_flags()
  assert opts.query_parameter == ['a=INT64:1', 'b=DATE:2026-11-25']


def test_parse_parameter__typed_values():
  assert parse_parameter('day=DATE:2026-11-25').value == datetime.date(2026, 11, 25)
  assert parse_parameter('n=int64:7').type_ == 'INT64' and parse_parameter('n=int64:7').value == 7
  assert parse_parameter("name=STRING:O'Brien; DROP TABLE x").value == "O'Brien; DROP TABLE x"
  assert parse_parameter('ratio=FLOAT64:0.5').value == 0.5


@pytest.mark.parametrize('text, problem', [('day', 'NAME=TYPE:VALUE'), ('x=GEOGRAPHY:POINT(1 1)', 'NAME=TYPE:VALUE'),
                                           ('n=INT64:seven', "'seven' is not a INT64")])
def test_parse_parameter__mistakes_are_named(text, problem):
  with pytest.raises(ValueError, match=problem):
    parse_parameter(text)
