"""The two verified packets of docs/domain.md §4 and their device."""

# Verbatim from docs/domain.md §4 (verified against real monitors), plus the CRLF terminator.
REALTIME = (b"##0372QN=20240601120000000;ST=39;CN=2011;PW=123456;MN=4A4300000000000000D00001;Flag=5;"
            b"CP=&&DataTime=20240601120000;a34001-Rtd=185.0,a34001-Flag=N;a34002-Rtd=96.0,a34002-Flag=N;"
            b"a34004-Rtd=48.0,a34004-Flag=N;LA-Rtd=62.3,LA-Flag=N;a01001-Rtd=26.4,a01001-Flag=N;"
            b"a01002-Rtd=41.0,a01002-Flag=N;a01006-Rtd=93.10,a01006-Flag=N;a01007-Rtd=2.1,a01007-Flag=N;"
            b"a01008-Rtd=135,a01008-Flag=N&&84C1\r\n")
MINUTE = (b"##0219QN=20240601130000123;ST=39;CN=2051;PW=123456;MN=4A4300000000000000D00001;Flag=4;"
          b"CP=&&DataTime=20240601125000;a34002-Min=71.0,a34002-Avg=88.4,a34002-Max=131.0,a34002-Flag=N;"
          b"LA-Min=55.2,LA-Avg=63.9,LA-Max=78.4,LA-Flag=N&&4C80\r\n")
MN = "4A4300000000000000D00001"
PW = "123456"
NOW_MS = 1_717_300_000_000  # 2024-06-02, after both packets

