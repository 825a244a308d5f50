from lbam.report import main

raise SystemExit(main())
