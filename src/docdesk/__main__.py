from docdesk.cli import main

main()
