"""六个百分百 (six 100%) compliance, judged on evidence.

- `thresholds`: which rule of the rules in force judges each item, and its set value and
  tolerance (`for`), so the report and the alerts read one source.
- `evidence`: one site's day as facts read from InfluxDB (PM10 by the minute), with HJ 212 quality
  flags respected (`<field>_flag` other than N or S: the value is not valid).
- `judge`: pure functions from facts + rules + the site's equipment to pass | fail |
  no_evidence (with its reason).
- `xlsx`: the daily and monthly workbooks.
"""

from api.six100.judge import ITEMS, REQUIRES, judge_site
from api.six100.thresholds import ItemRules, item_rules

__all__ = ["ITEMS", "REQUIRES", "ItemRules", "item_rules", "judge_site"]
