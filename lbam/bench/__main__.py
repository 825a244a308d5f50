from lbam.bench import main

raise SystemExit(main())
