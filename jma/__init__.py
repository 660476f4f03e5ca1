"""Official information of the Japan Meteorological Agency (気象庁防災情報XML) in Sonae.

``jma.telegram`` parses telegrams into statements (area, phenomenon, 警戒レベル相当, status),
``jma.areas`` maps JMA area codes to 6-digit municipality codes, ``jma.store`` keeps raw telegrams
and what was read from them, ``jma.reader`` polls the PULL Atom feeds or reads files.
"""
